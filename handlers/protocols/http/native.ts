/**
 * The native HTTP API: handlers at C-class cost per request, for people who
 * accept a less familiar API in return (the idea of uWebSockets.js). A
 * `Router` matches the request target's bytes; the handler gets a
 * `NativeRequest` *view* of the parser's state and a `NativeReply` that
 * writes straight into the connection:
 *
 * ```ts ignore
 * import { Router, serveNative } from "./mod.ts";
 * const router = new Router()
 *   .get("/", (_req, res) => res.text("Hello, World!"))
 *   .get("/users/:id", (req, res) => res.json({ id: req.param("id"), q: req.query("q") }))
 *   .post("/echo", async (req, res) => res.bytes(await req.body()));
 * const server = serveNative({ port: 8000 }, router);
 * ```
 *
 * How patterns match (segments, `:params`, a trailing `*`, priority, the
 * target matched as sent: percent-encoding is not decoded, the query is
 * ignored) is written at the top of router.ts (`Router`).
 *
 * ## What it costs, and why
 *
 * In the steady state a request allocates nothing: no `Request`, no
 * `Headers`, no `URL`, no `Response`, no string. The route is found on the
 * bytes (params are offsets); the request and reply objects are one pair per
 * connection, reused; the reply's head (status line, Date, headers,
 * Content-Length) is cached per route and reused whenever status, headers,
 * body type and length are those of the route's previous reply (the cache is
 * dropped when the Date header changes, once a second); a `text`/`json` body
 * equal to the previous one is sent from the cached head-and-body bytes. A
 * request whose bytes equal the connection's previous request (keep-alive
 * clients asking the same thing, pipelined batches) is not even parsed again.
 * The answers to one read leave in one `send` (the connection is corked during
 * a read). Strings are made only when asked for: `path`, `param`, `query`,
 * `header` each build one on access.
 *
 * ## The view's lifetime (the price)
 *
 * - A `NativeRequest` is valid **during the handler call only**. The same
 *   object then describes the connection's next request: do not keep it, or
 *   anything you did not copy out of it, past a synchronous return.
 * - If the handler returns a promise (an `async` handler), the request is
 *   **detached** first: its bytes (head, target) are copied once into arrays
 *   of its own, so it stays valid for as long as you hold it, and the
 *   connection takes fresh objects for its next request. The same holds for
 *   the `NativeReply`.
 * - A handler must reply (`text`, `json`, `bytes` or `end`, exactly once)
 *   before it returns, or before its promise settles. One that returns (or
 *   resolves) without replying gets a 500 and a logged error; there is no
 *   callback-style "reply later" without a promise.
 * - `body()` is for requests with a body (Content-Length or chunked): call it
 *   in the handler (or, in an async handler, after awaiting something else:
 *   the body of an async handler's request is always kept). Its bytes are
 *   copied out of the read buffer once, into one array (sized by
 *   Content-Length; grown by doubling for a chunked body), bounded by
 *   `maxBody` (413). A sync handler that never calls it lets the body be
 *   discarded as it arrives. `Expect: 100-continue` is answered when
 *   `body()` is called; a request that expected it and whose body was not
 *   wanted closes the connection after its answer.
 * - What `path`, `param` and `query` return is decoded or not as follows:
 *   `path` and `param` are the raw bytes of the target (percent-encoding
 *   kept: `decodeURIComponent` them if you need text); `query` decodes
 *   (`+` and `%XX`, as `URLSearchParams`); `header` values are the bytes as
 *   sent, one UTF-16 unit per byte (as `Headers` gives them), repeated
 *   fields joined with ", ".
 *
 * ## The rest of HTTP
 *
 * HTTP/1.1 and 1.0, keep-alive, pipelining: answers leave in request order.
 * Sync replies are in order by construction; while an async reply is pending,
 * the replies after it are kept (copied) and leave behind it, as in the fetch
 * protocol (at most 32 requests in flight per connection, then it stops
 * reading). HEAD is served by GET routes with the body left out; 404 when no
 * route's path matches, 405 with `Allow` when one does for other methods. A
 * handler that throws (or whose promise rejects) gets a 500, logged once;
 * the server serves on. Bad requests get the parser's status (400, 413, 414,
 * 431, 501, 505) and `Connection: close`.
 *
 * ## When to pick it over `serve()`
 *
 * `serve()` runs `Deno.serve` code unchanged (web `Request`/`Response`,
 * Hono, streaming bodies, `AbortSignal`s). Pick the native API for hot
 * endpoints where the per-request cost matters and handlers are small: no
 * web objects, no response streaming (a body is one string or array), no
 * middleware other than your own functions. Both run on the same reactor.
 *
 * @module
 */

import { getLogger } from "../../../log/mod.ts";
import type { Reactor } from "../../../reactor/reactor.ts";
import type { CloseReason, Connection, Protocol, TimeoutKind } from "../../connection.ts";
import { counter, type ProtocolDefinition, type ProtocolInstance } from "../definition.ts";
import { HttpParser, type HttpParserSink, METHOD_HEAD } from "./http_parser.ts";
import { DateClock } from "./date_clock.ts";
import {
  type StaticAnswer,
  StaticFiles,
  staticMetrics,
  type StaticOptions,
} from "./static/static_files.ts";
import { latin1, latin1Bytes } from "./request.ts";
import { MEMO_MAX, RequestMemo } from "./request_memo.ts";
import { CONTINUE_100, reasonPhrase, statusLine } from "./response.ts";
import { type Route, RouteMatch, Router } from "./router.ts";

export { type Route, RouteMatch, Router };

const log = getLogger(["reactor", "http", "native"]);
const encoder = new TextEncoder();

/**
 * A native handler. Reply through `res` before returning, or return a promise
 * and reply before it settles (the request is then detached: see the module
 * documentation).
 */
export type NativeHandler = (req: NativeRequest, res: NativeReply) => void | Promise<void>;

/**
 * A request, as a view of the parser's state: valid during the handler call
 * only, unless the handler returned a promise (then `detached` is true and it
 * stays valid). Every string is made on access.
 */
export interface NativeRequest {
  /** The method, e.g. "GET" (the same string object every time for the common methods). */
  readonly method: string;
  /**
   * The path as sent, percent-encoding kept, without the query; for an
   * absolute-form target (`http://host/p`), the path after the authority.
   */
  readonly path: string;
  /** The request target as sent: path and query. */
  readonly target: string;
  /** Whether the view holds its own copy of the request (the handler returned a promise). */
  readonly detached: boolean;
  /**
   * A route parameter by name (`"id"` for `:id`, `"*"` for the wildcard) or
   * by index (in pattern order), as sent: not percent-decoded.
   *
   * @throws {RangeError} when the route has no such parameter
   */
  param(nameOrIndex: string | number): string;
  /**
   * The first value of query parameter `name`, decoded as `URLSearchParams`
   * does; "" for a name without "="; null when absent.
   */
  query(name: string): string | null;
  /**
   * A header field's value (name case-insensitive), repeated fields joined
   * with ", "; null when absent.
   */
  header(name: string): string | null;
  /**
   * The whole body (copied once out of the read buffer). An empty array for
   * a request without one. Rejects if the request turns out malformed or the
   * connection closes first.
   */
  body(): Promise<Uint8Array>;
}

/**
 * The reply to one request. `status` and `header` set it up; exactly one of
 * `text`, `json`, `bytes` or `end` sends it (head and body together).
 */
export interface NativeReply {
  /** Whether the reply has been sent. */
  readonly sent: boolean;
  /** Whether the connection is gone (a reply is then dropped). */
  readonly aborted: boolean;
  /**
   * Sets the status (default 200).
   *
   * @throws {RangeError} unless an integer from 200 to 999
   * @throws {Error} once the reply is sent
   */
  status(code: number): this;
  /**
   * Adds a header field (repeats add more). Names and values are checked
   * when the head is built (a token; no CR, LF or NUL; Latin-1), and
   * Content-Length, Transfer-Encoding and Connection are the server's: a
   * TypeError from `text`/`json`/`bytes`/`end` then says which.
   *
   * @throws {Error} once the reply is sent
   */
  header(name: string, value: string): this;
  /**
   * Sends `body` as UTF-8, `Content-Type: text/plain; charset=utf-8` unless
   * one was set.
   *
   * @throws {Error} once the reply is sent
   */
  text(body: string): void;
  /**
   * Sends `JSON.stringify(value)`, `Content-Type: application/json` unless
   * one was set.
   *
   * @throws {TypeError} when the value does not serialise (undefined, a function)
   * @throws {Error} once the reply is sent
   */
  json(value: unknown): void;
  /**
   * Sends `body` (copied before this returns),
   * `Content-Type: application/octet-stream` unless one was set.
   *
   * @throws {Error} once the reply is sent
   */
  bytes(body: Uint8Array): void;
  /**
   * Sends the reply without a body (`Content-Length: 0`; none at all for 204
   * and 304).
   *
   * @throws {Error} once the reply is sent
   */
  end(): void;
}

/** Settings of `nativeProtocol`. */
export interface NativeOptions {
  /** Largest request body in bytes (413 above). Default 1 MiB. */
  maxBody?: number;
  /** Largest request header section in bytes (431 above). Default 16 KiB. */
  maxHeaderBytes?: number;
  /**
   * A directory whose files answer the GET and HEAD requests no route
   * matches (sendfile, validators, ranges: docs/http.md, "Static files").
   */
  files?: StaticOptions;
}

// ---------------------------------------------------------------------------
// Constants

/** Requests one connection may have in flight before it stops reading. */
const MAX_IN_FLIGHT = 32;
/** Strings up to this many UTF-16 units are encoded into the shared scratch buffer. */
const SCRATCH_CHARS = 16 << 10;
/** Identical replies in a row sent from one prebuilt run of copies (pipelined batches). */
const RUN_MAX = 32;
/** Replies longer than this are not made into runs. */
const RUN_BYTES_MAX = 512;

/** Response variants: connection handling. */
const KEEP_ALIVE_11 = 0; // HTTP/1.1 keep-alive: no Connection header needed
const KEEP_ALIVE_10 = 1; // HTTP/1.0 that asked for keep-alive
const CLOSE = 2;
const CONNECTION_LINE = ["", "Connection: keep-alive\r\n", "Connection: close\r\n"];

/** Body kinds (each has its default Content-Type). */
const KIND_NONE = 0;
const KIND_TEXT = 1;
const KIND_JSON = 2;
const KIND_BYTES = 3;
const CONTENT_TYPE_LINE = [
  "",
  "Content-Type: text/plain; charset=utf-8\r\n",
  "Content-Type: application/json\r\n",
  "Content-Type: application/octet-stream\r\n",
];

/** Reply states. */
const OPEN = 0;
const DONE = 1;

const EMPTY = new Uint8Array(0);
const NO_FIELDS = new Int32Array(0);
const NO_NAMES: readonly string[] = [];

/** A token (RFC 9110 §5.6.2). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What a field value may not contain: CR, LF, NUL, or anything past Latin-1. */
const BAD_VALUE = /[\r\n\0\u0100-\uffff]/;

/**
 * `s` as UTF-8 into `out` from 0 (which has room for 3 bytes per unit);
 * returns the length. A lone surrogate becomes U+FFFD, as TextEncoder does.
 */
function utf8Into(s: string, out: Uint8Array): number {
  let n = 0;
  const len = s.length;
  for (let k = 0; k < len; k++) {
    let c = s.charCodeAt(k);
    if (c < 0x80) {
      out[n++] = c;
      continue;
    }
    if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6);
      out[n++] = 0x80 | (c & 0x3f);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = k + 1 < len ? s.charCodeAt(k + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        k++;
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        out[n++] = 0xf0 | (c >> 18);
        out[n++] = 0x80 | ((c >> 12) & 0x3f);
        out[n++] = 0x80 | ((c >> 6) & 0x3f);
        out[n++] = 0x80 | (c & 0x3f);
        continue;
      }
      c = 0xfffd;
    }
    out[n++] = 0xe0 | (c >> 12);
    out[n++] = 0x80 | ((c >> 6) & 0x3f);
    out[n++] = 0x80 | (c & 0x3f);
  }
  return n;
}

/** Lower-cases an ASCII letter's code. */
function lower(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c + 32 : c;
}

/** Decodes a query component t[from, to): "+" is a space, %XX bytes are UTF-8. */
function decodeComponent(t: Uint8Array, from: number, to: number): string {
  let plain = true;
  for (let k = from; k < to; k++) {
    const b = t[k];
    if (b === 0x25 || b === 0x2b) {
      plain = false;
      break;
    }
  }
  const raw = latin1(t, from, to);
  if (plain) return raw;
  const spaced = raw.replaceAll("+", " ");
  try {
    return decodeURIComponent(spaced);
  } catch {
    return spaced; // malformed %-escapes: as sent
  }
}

// ---------------------------------------------------------------------------
// The request view

/** A reply's place in its connection's queue: its bytes once it is sent. */
class Slot {
  bytes: Uint8Array | null = null;
  /** A static file's answer, written in place of `bytes`, and how. */
  answer: StaticAnswer | null = null;
  keepAlive = true;
  http10 = false;
}

class RequestView implements NativeRequest {
  method = "GET";
  detached = false;
  /** The head's bytes (the parser's, or a copy once detached). */
  head: Uint8Array = EMPTY;
  fields: Int32Array = NO_FIELDS;
  fieldCount = 0;
  /** The target's bytes, [0, match.targetEnd). */
  tgt: Uint8Array = EMPTY;
  readonly match: RouteMatch<NativeHandler>;
  names: readonly string[] = NO_NAMES;
  pattern = "";
  /** Where this request's reply waits in the queue (when it is not sent at once). */
  slot: Slot | null = null;
  // The body.
  hasBody = false;
  expectContinue = false;
  continued = false;
  /** Body bytes are kept (body() was called, or the view is detached). */
  collecting = false;
  #contentLength = -1;
  #buf: Uint8Array | null = null;
  #len = 0;
  #done = false;
  #error: Error | null = null;
  #promise: Promise<Uint8Array> | null = null;
  #resolve: ((b: Uint8Array) => void) | null = null;
  #reject: ((e: Error) => void) | null = null;
  readonly #owner: NativeConnection;

  constructor(owner: NativeConnection, maxParams: number) {
    this.#owner = owner;
    this.match = new RouteMatch<NativeHandler>(maxParams);
  }

  /** Takes the parser's request (head complete), as matched into `match`. */
  begin(p: HttpParser, method: string): void {
    this.method = method;
    this.head = p.headBytes;
    this.fields = p.fields;
    this.fieldCount = p.fieldCount;
    this.tgt = p.target;
    const route = this.match.route;
    if (route !== null) {
      this.names = route.paramNames;
      this.pattern = route.pattern;
    } else {
      this.names = NO_NAMES;
      this.pattern = "";
    }
    this.slot = null;
    this.collecting = false;
    this.#promise = null;
    const hasBody = p.contentLength > 0 || p.chunked;
    this.hasBody = hasBody;
    if (hasBody) {
      this.#contentLength = p.contentLength;
      this.expectContinue = p.expectContinue;
      this.continued = false;
      this.#buf = null;
      this.#len = 0;
      this.#done = false;
      this.#error = null;
      this.#resolve = this.#reject = null;
    }
  }

  /** The same request again (its bytes repeated; no body): only the per-request state is reset. */
  again(): void {
    this.slot = null;
    this.collecting = false;
    this.#promise = null;
  }

  /** Copies what the view points into, so that it outlives the parser's next request. */
  detach(): void {
    if (this.detached) return;
    const n = this.fieldCount;
    const used = n === 0 ? 0 : this.fields[4 * n - 1];
    this.head = this.head.slice(0, used);
    this.fields = this.fields.slice(0, 4 * n);
    this.tgt = this.tgt.slice(0, this.match.targetEnd);
    this.detached = true;
    if (this.hasBody) this.collecting = true;
  }

  get path(): string {
    const m = this.match;
    if (m.pathStart === m.pathEnd) return "/";
    return latin1(this.tgt, m.pathStart, m.pathEnd);
  }

  get target(): string {
    return latin1(this.tgt, 0, this.match.targetEnd);
  }

  param(key: string | number): string {
    const k = typeof key === "number" ? key : this.names.indexOf(key);
    const m = this.match;
    if (!(k >= 0 && k < m.paramCount)) {
      throw new RangeError(
        `No parameter ${JSON.stringify(key)} in route ${JSON.stringify(this.pattern)}`,
      );
    }
    return latin1(this.tgt, m.params[2 * k], m.params[2 * k + 1]);
  }

  query(name: string): string | null {
    const t = this.tgt;
    const end = this.match.targetEnd;
    let i = this.match.pathEnd + 1; // after the "?"
    while (i < end) {
      let amp = i;
      let eq = -1;
      let plain = true;
      for (; amp < end; amp++) {
        const b = t[amp];
        if (b === 0x26) break; // &
        if (b === 0x3d && eq < 0) eq = amp; // =
        else if ((b === 0x25 || b === 0x2b) && eq < 0) plain = false; // % + in the name
      }
      const keyEnd = eq < 0 ? amp : eq;
      let same: boolean;
      if (plain) {
        same = keyEnd - i === name.length;
        for (let k = 0; same && k < name.length; k++) same = t[i + k] === name.charCodeAt(k);
      } else {
        same = decodeComponent(t, i, keyEnd) === name;
      }
      if (same) return eq < 0 ? "" : decodeComponent(t, eq + 1, amp);
      i = amp + 1;
    }
    return null;
  }

  header(name: string): string | null {
    const h = this.head;
    const f = this.fields;
    const len = name.length;
    let out: string | null = null;
    for (let k = 0; k < this.fieldCount; k++) {
      const s = f[4 * k];
      if (f[4 * k + 1] - s !== len) continue;
      let j = 0;
      while (j < len && lower(h[s + j]) === lower(name.charCodeAt(j))) j++;
      if (j !== len) continue;
      const v = latin1(h, f[4 * k + 2], f[4 * k + 3]);
      out = out === null ? v : `${out}, ${v}`;
    }
    return out;
  }

  body(): Promise<Uint8Array> {
    if (this.#promise !== null) return this.#promise;
    if (!this.hasBody) return this.#promise = Promise.resolve(new Uint8Array(0));
    this.collecting = true;
    const promise = new Promise<Uint8Array>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // A rejection the handler never gets to await is not an unhandled one.
    promise.catch(() => {});
    this.#promise = promise;
    if (this.#error !== null) this.#reject!(this.#error);
    else if (this.#done) this.#resolve!(this.#bytes());
    else if (this.expectContinue && !this.continued) this.#owner.sendContinue(this);
    return promise;
  }

  /** Body bytes data[start, end) arrived (copied). */
  pushBody(data: Uint8Array, start: number, end: number): void {
    const n = end - start;
    let buf = this.#buf;
    const need = this.#len + n;
    if (buf === null || need > buf.length) {
      // Content-Length: one array of that size. Chunked: doubling.
      const size = this.#contentLength >= 0
        ? this.#contentLength
        : Math.max(need, buf === null ? 1024 : buf.length * 2);
      const grown = new Uint8Array(Math.max(size, need));
      if (buf !== null) grown.set(buf.subarray(0, this.#len));
      this.#buf = buf = grown;
    }
    buf.set(data.subarray(start, end), this.#len);
    this.#len = need;
  }

  /** The body is complete. */
  endBody(): void {
    this.#done = true;
    if (this.#resolve !== null) this.#resolve(this.#bytes());
  }

  /** The body will not complete. */
  failBody(error: Error): void {
    if (this.#done || this.#error !== null) return;
    this.#error = error;
    if (this.#reject !== null) this.#reject(error);
  }

  #bytes(): Uint8Array {
    const buf = this.#buf;
    if (buf === null) return new Uint8Array(0);
    return this.#len === buf.length ? buf : buf.subarray(0, this.#len);
  }
}

// ---------------------------------------------------------------------------
// The reply

/** One route's last reply head: reused while the reply's shape stays the same. */
class HeadCache {
  /** The Date generation the head was built in. */
  gen = -1;
  status = 0;
  variant = 0;
  kind = 0;
  bodyLength = -1;
  headerCount = 0;
  /** The reply's header names and values, by pair. */
  headers: string[] = [];
  /** The head's bytes (never changed once built: replaced). */
  head: Uint8Array = EMPTY;
  /** The text body last sent with this head, and head + its bytes once sent twice. */
  text: string | null = null;
  full: Uint8Array | null = null;
  /** RUN_MAX copies of `runSource` (`head` or `full`) end to end, and its address. */
  runSource: Uint8Array | null = null;
  run: Uint8Array = EMPTY;
  runPointer: Deno.PointerObject | null = null;

  /** Makes `run` hold copies of `bytes` (one of this cache's arrays, never changed). */
  runOf(bytes: Uint8Array): void {
    if (this.runSource === bytes) return;
    const len = bytes.length;
    const run = new Uint8Array(len * RUN_MAX);
    for (let k = 0; k < RUN_MAX; k++) run.set(bytes, k * len);
    this.run = run;
    this.runPointer = Deno.UnsafePointer.of(run);
    this.runSource = bytes;
  }
}

class Reply implements NativeReply {
  readonly #owner: NativeConnection;
  readonly #app: NativeApp;
  #state = DONE;
  #status = 200;
  readonly #headers: string[] = [];
  #headerCount = 0;
  #cache: HeadCache;
  #variant = KEEP_ALIVE_11;
  #headOnly = false;
  /** Null: write straight to the connection. Else: the queue slot the bytes go to. */
  #slot: Slot | null = null;

  constructor(owner: NativeConnection) {
    this.#owner = owner;
    this.#app = owner.app;
    this.#cache = owner.app.errorCache;
  }

  /** Sets up for a new request. */
  begin(cache: HeadCache, variant: number, headOnly: boolean, slot: Slot | null): void {
    this.#state = OPEN;
    this.#status = 200;
    this.#headerCount = 0;
    this.#cache = cache;
    this.#variant = variant;
    this.#headOnly = headOnly;
    this.#slot = slot;
  }

  /** From now on the reply goes to `slot` (its handler returned a promise). */
  queueTo(slot: Slot): void {
    this.#slot = slot;
  }

  get sent(): boolean {
    return this.#state === DONE;
  }

  get aborted(): boolean {
    return this.#owner.conn.closed;
  }

  status(code: number): this {
    if (this.#state !== OPEN) throw new Error("The reply is already sent");
    if (!Number.isInteger(code) || code < 200 || code > 999) {
      throw new RangeError(`A reply's status is an integer from 200 to 999: ${code}`);
    }
    this.#status = code;
    return this;
  }

  header(name: string, value: string): this {
    if (this.#state !== OPEN) throw new Error("The reply is already sent");
    const k = 2 * this.#headerCount++;
    this.#headers[k] = name;
    this.#headers[k + 1] = value;
    return this;
  }

  text(body: string): void {
    this.#sendText(body, KIND_TEXT);
  }

  json(value: unknown): void {
    if (this.#state !== OPEN) throw new Error("The reply is already sent");
    const s = JSON.stringify(value);
    if (typeof s !== "string") throw new TypeError("The value does not serialise to JSON");
    this.#sendText(s, KIND_JSON);
  }

  bytes(body: Uint8Array): void {
    this.#sendBytes(body, body.length, KIND_BYTES);
  }

  end(): void {
    this.#sendBytes(EMPTY, 0, KIND_NONE);
  }

  /** Replaces whatever was set up with a plain-text error reply, and sends it. */
  fail(status: number): void {
    if (this.#state !== OPEN) return;
    this.#headerCount = 0;
    this.#status = status;
    this.#cache = this.#app.errorCache;
    this.#sendText(reasonPhrase(status) || "Error", KIND_TEXT);
  }

  /** Whether the cached head fits this reply (body length aside). */
  #cacheFits(c: HeadCache, kind: number): boolean {
    if (
      c.gen !== this.#app.clock.generation || c.status !== this.#status || c.kind !== kind ||
      c.variant !== this.#variant || c.headerCount !== this.#headerCount
    ) return false;
    const h = this.#headers;
    const ch = c.headers;
    for (let k = 2 * this.#headerCount - 1; k >= 0; k--) if (h[k] !== ch[k]) return false;
    return true;
  }

  #sendText(s: string, kind: number): void {
    if (this.#state !== OPEN) throw new Error("The reply is already sent");
    const c = this.#cache;
    const fits = this.#cacheFits(c, kind);
    if (fits && c.text === s && c.full !== null) {
      // The same reply as last time: sent from the cached bytes.
      this.#emit(this.#headOnly ? c.head : c.full, null, 0);
      return;
    }
    let body: Uint8Array;
    let n: number;
    if (s.length <= SCRATCH_CHARS) {
      body = this.#app.scratch;
      n = utf8Into(s, body);
    } else {
      body = encoder.encode(s);
      n = body.length;
    }
    if (!this.#bodyAllowed()) n = 0;
    if (fits && c.bodyLength === n) {
      if (c.text === s) {
        // The second time in a row: keep head and body as one array.
        const full = new Uint8Array(c.head.length + n);
        full.set(c.head);
        full.set(body.subarray(0, n), c.head.length);
        c.full = full;
        this.#emit(this.#headOnly ? c.head : full, null, 0);
        return;
      }
      c.text = s;
      c.full = null;
    } else {
      this.#rebuild(c, kind, n);
      c.text = s;
    }
    this.#emit(c.head, this.#headOnly ? null : body, n);
  }

  #sendBytes(body: Uint8Array, length: number, kind: number): void {
    if (this.#state !== OPEN) throw new Error("The reply is already sent");
    const c = this.#cache;
    const n = this.#bodyAllowed() ? length : 0;
    if (!this.#cacheFits(c, kind) || c.bodyLength !== n) this.#rebuild(c, kind, n);
    c.text = null;
    c.full = null;
    this.#emit(c.head, this.#headOnly ? null : body, n);
  }

  #bodyAllowed(): boolean {
    return this.#status !== 204 && this.#status !== 304;
  }

  /** Builds the head for this reply into `c`. */
  #rebuild(c: HeadCache, kind: number, bodyLength: number): void {
    const status = this.#status;
    const n = this.#headerCount;
    const h = this.#headers;
    let fields = "";
    let hasDate = false;
    let hasType = false;
    for (let k = 0; k < n; k++) {
      const name = h[2 * k];
      const value = h[2 * k + 1];
      if (typeof name !== "string" || !TOKEN.test(name)) {
        throw new TypeError(`Invalid header name: ${JSON.stringify(name)}`);
      }
      if (typeof value !== "string" || BAD_VALUE.test(value)) {
        throw new TypeError(`Invalid value for header ${name}: ${JSON.stringify(value)}`);
      }
      const lc = name.toLowerCase();
      if (lc === "content-length" || lc === "transfer-encoding" || lc === "connection") {
        throw new TypeError(`The ${name} header is the server's to set`);
      }
      if (lc === "date") hasDate = true;
      else if (lc === "content-type") hasType = true;
      fields += `${name}: ${value.trim()}\r\n`;
    }
    let head = statusLine(status, false);
    if (!hasDate) head += `Date: ${this.#app.clock.value}\r\n`;
    head += fields;
    if (!hasType && kind !== KIND_NONE && this.#bodyAllowed()) head += CONTENT_TYPE_LINE[kind];
    if (this.#bodyAllowed()) head += `Content-Length: ${bodyLength}\r\n`;
    head += CONNECTION_LINE[this.#variant] + "\r\n";
    const bytes = latin1Bytes(head);
    // Stored only now: a header that throws leaves the cache as it was.
    c.head = bytes;
    c.gen = this.#app.clock.generation;
    c.status = status;
    c.kind = kind;
    c.variant = this.#variant;
    c.bodyLength = bodyLength;
    c.headerCount = n;
    c.headers.length = 2 * n;
    for (let k = 0; k < 2 * n; k++) c.headers[k] = h[k];
    c.text = null;
    c.full = null;
  }

  /**
   * Sends head (one of the cache's arrays: never changed once built) and
   * body[0, n): straight into the connection, or copied into the queue slot
   * when answers before it are still owed.
   */
  #emit(head: Uint8Array, body: Uint8Array | null, n: number): void {
    this.#state = DONE;
    this.#app.requests++;
    const slot = this.#slot;
    if (slot === null) {
      const owner = this.#owner;
      if (body === null || n === 0) owner.sendCached(head, this.#cache);
      else {
        owner.send(head, 0, head.length);
        owner.send(body, 0, n);
      }
      return;
    }
    let bytes = head;
    if (body !== null && n > 0) {
      bytes = new Uint8Array(head.length + n);
      bytes.set(head);
      bytes.set(n === body.length ? body : body.subarray(0, n), head.length);
    }
    this.#owner.settle(slot, bytes);
  }
}

// ---------------------------------------------------------------------------
// Per server

/** The per-server part: the router, the Date header, the head caches, counters. */
class NativeApp {
  readonly router: Router<NativeHandler>;
  readonly reactor: Reactor;
  readonly maxBody: number;
  readonly maxHeaderBytes: number;
  /** The Date header's value; its generation tells head caches they are stale. */
  readonly clock: DateClock;
  /** Where text bodies are encoded (3 bytes per UTF-16 unit at most). */
  readonly scratch = new Uint8Array(3 * SCRATCH_CHARS);
  readonly notFoundCache = new HeadCache();
  readonly notAllowedCache = new HeadCache();
  readonly errorCache = new HeadCache();
  /** Index: route id. */
  readonly #caches: HeadCache[] = [];
  /** Replies sent. */
  requests = 0;
  /** Handler exceptions, rejections and missing replies. */
  errors = 0;
  constructor(reactor: Reactor, router: Router<NativeHandler>, options: NativeOptions) {
    this.reactor = reactor;
    this.router = router;
    this.maxBody = options.maxBody ?? 1 << 20;
    this.maxHeaderBytes = options.maxHeaderBytes ?? 16 << 10;
    this.clock = new DateClock(reactor);
    this.files = options.files ? new StaticFiles(options.files) : null;
  }

  /** Files for what no route matches, or null. */
  readonly files: StaticFiles | null;

  /** The head cache of route `id`. */
  cacheFor(id: number): HeadCache {
    const caches = this.#caches;
    while (caches.length <= id) caches.push(new HeadCache());
    return caches[id];
  }

  /** A handler threw or rejected: log it (once) and count it. */
  handlerFailed(error: unknown, req: NativeRequest): void {
    this.errors++;
    log.error("handler for {method} {path} threw: {error}", {
      method: req.method,
      path: safePath(req),
      error,
    });
  }

  /** A handler returned (or resolved) without replying. */
  noReply(req: NativeRequest, how: string): void {
    this.errors++;
    log.error("handler for {method} {path} {how} without replying: 500", {
      method: req.method,
      path: safePath(req),
      how,
    });
  }

  /** Stops the Date timer. */
  close(): void {
    this.clock.close();
    this.files?.close();
  }
}

function safePath(req: NativeRequest): string {
  try {
    return req.path;
  } catch {
    return "?";
  }
}

// ---------------------------------------------------------------------------
// Per connection

class NativeConnection implements Protocol, HttpParserSink {
  readonly app: NativeApp;
  readonly conn: Connection;
  readonly #parser: HttpParser;
  #req: RequestView;
  #res: Reply;
  /** Replies not yet written, in request order (only while one is pending). */
  readonly #queue: Slot[] = [];
  /** The request whose body is arriving and wanted. */
  #bodyTo: RequestView | null = null;
  /** Between onHead and onRequest. */
  #inBody = false;
  /** No more requests: close once the queue is written. */
  #closing = false;
  /** Graceful shutdown: the request in progress is answered with Connection: close. */
  #draining = false;
  #peerEnded = false;
  /** Inside data() (or the equivalent for kept bytes). */
  #inData = false;
  /** Unparsed bytes kept while not reading (output full, too many in flight). */
  #stash: Uint8Array | null = null;
  #requestStart = -1;
  readonly #memo = new RequestMemo();
  /** The request just completed may be remembered. */
  #memoable = false;
  /** How the last request was handled: its view, the router's size then, its head cache, ... */
  #lastView: RequestView | null = null;
  #lastRoutes = 0;
  #lastCache: HeadCache | null = null;
  #lastVariant = KEEP_ALIVE_11;
  #lastHeadOnly = false;

  constructor(app: NativeApp, conn: Connection) {
    this.app = app;
    this.conn = conn;
    this.#parser = new HttpParser(this, {
      maxBody: app.maxBody,
      maxHeaderBytes: app.maxHeaderBytes,
      captureHeaders: true,
    });
    this.#req = new RequestView(this, app.router.maxParams);
    this.#res = new Reply(this);
  }

  // ---- input ----

  data(_conn: Connection, data: Uint8Array, start: number, end: number): void {
    if (this.#closing) return;
    this.#inData = true;
    // The answers to this read leave in one send.
    const batch = this.#beginBatch();
    if (this.#stash !== null) {
      const kept = this.#stash;
      this.#stash = null;
      this.#parse(kept, 0, kept.length);
      const left = this.#stash as Uint8Array | null;
      if (left !== null) {
        // Still not parsable: keep the new bytes behind the old.
        const more = new Uint8Array(left.length + end - start);
        more.set(left);
        more.set(data.subarray(start, end), left.length);
        this.#stash = more;
        start = end;
      }
    }
    if (start < end) this.#parse(data, start, end);
    if (batch) this.#endBatch();
    this.#inData = false;
  }

  #parse(data: Uint8Array, start: number, end: number): void {
    const parser = this.#parser;
    const conn = this.conn;
    if (parser.idle && this.#requestStart < 0) this.#requestStart = this.app.reactor.now;
    let i = start;
    while (i < end && !this.#closing) {
      if (conn.outputFull || this.#queue.length >= MAX_IN_FLIGHT) {
        // The peer is not reading its answers, or too many are owed: keep the
        // rest and stop reading (at high water the connection stopped itself).
        this.#stash = data.slice(i, end);
        if (!conn.outputFull) conn.pauseReading();
        break;
      }
      const len = this.#memo.length;
      if (len > 0 && parser.idle && this.#memo.matches(data, i, end)) {
        // The same bytes as the last simple request, from the same (idle)
        // state: the same request. The parser's fields still describe it.
        this.#again(parser);
        i += len;
        continue;
      }
      const from = i;
      const fresh = parser.idle;
      // The parser's fields are about to describe another request.
      if (fresh) this.#memo.forget();
      this.#memoable = false;
      i = parser.execute(data, i, end);
      if (fresh && this.#memoable && i - from <= MEMO_MAX && parser.idle) {
        this.#memo.remember(data, from, i);
      }
      if (i === from) break;
    }
    if (parser.idle) {
      this.#requestStart = -1;
      return;
    }
    // A request is left incomplete: the request (slowloris) timeout runs.
    if (this.#requestStart < 0) this.#requestStart = this.app.reactor.now;
    const t = conn.timeouts;
    if (t !== null && t.requestMs > 0) conn.pullTimer(this.#requestStart + t.requestMs);
  }

  /** The head of a request is complete: match it and call its handler. */
  onHead(p: HttpParser): boolean {
    const app = this.app;
    const req = this.#req;
    const method = p.methodString();
    const status = app.router.match(p.method, method, p.target, 0, p.targetLength, req.match);
    if (status === 404 && app.files !== null) {
      const answer = app.files.answer(p, true, app.reactor.now);
      if (answer !== null) {
        this.#lastView = null; // the same bytes again come back here, not to a route
        this.#serveStatic(p, answer);
        return true;
      }
    }
    req.begin(p, method);
    const variant = this.#draining || !p.keepAlive
      ? CLOSE
      : p.versionMinor === 0
      ? KEEP_ALIVE_10
      : KEEP_ALIVE_11;
    const cache = status === 200
      ? app.cacheFor(req.match.route!.id)
      : status === 404
      ? app.notFoundCache
      : app.notAllowedCache;
    const headOnly = p.method === METHOD_HEAD;
    // What a request with the same bytes will be handled with (see #again).
    this.#lastView = req;
    this.#lastRoutes = app.router.routes.length;
    this.#lastCache = cache;
    this.#lastVariant = variant;
    this.#lastHeadOnly = headOnly;
    this.#handle(req, cache, variant, headOnly);
    return true;
  }

  /**
   * The same bytes as the last request came again, from the same (idle)
   * parser state: the same request. Unless the view was replaced (its
   * handler was async), the routes changed or the server is draining, the
   * view still describes it and the route, reply variant and head cache are
   * the same: only the handler runs.
   */
  #again(p: HttpParser): void {
    const req = this.#req;
    if (
      req !== this.#lastView || this.#draining ||
      this.#lastRoutes !== this.app.router.routes.length
    ) {
      this.onHead(p);
    } else {
      req.again();
      this.#handle(req, this.#lastCache!, this.#lastVariant, this.#lastHeadOnly);
    }
    this.onRequest(p);
  }

  /** A file's answer: now when nothing is owed before it, else in its slot. */
  #serveStatic(p: HttpParser, answer: StaticAnswer): void {
    const keepAlive = !this.#draining && p.keepAlive;
    this.app.requests++;
    if (this.#queue.length === 0) {
      this.#spillRun();
      answer.write(this.conn, keepAlive, p.versionMinor === 0, this.app.clock.value);
      return;
    }
    const slot = new Slot();
    slot.answer = answer.detach();
    slot.bytes = EMPTY;
    slot.keepAlive = keepAlive;
    slot.http10 = p.versionMinor === 0;
    this.#queue.push(slot);
  }

  /** Calls the handler of the request `req` describes (or answers 404/405). */
  #handle(req: RequestView, cache: HeadCache, variant: number, headOnly: boolean): void {
    const res = this.#res;
    let slot: Slot | null = null;
    if (this.#queue.length > 0) {
      slot = new Slot();
      this.#queue.push(slot);
      req.slot = slot;
    }
    this.#inBody = true;
    res.begin(cache, variant, headOnly, slot);
    const m = req.match;
    if (m.status === 200) {
      let result: void | Promise<void>;
      try {
        result = m.route!.handler(req, res);
      } catch (error) {
        this.app.handlerFailed(error, req);
        res.fail(500);
        result = undefined;
      }
      if (
        result !== undefined && result !== null &&
        typeof (result as Promise<void>).then === "function"
      ) {
        this.#pending(req, res, result as Promise<void>);
      } else if (!res.sent) {
        this.app.noReply(req, "returned");
        res.fail(500);
      }
    } else if (m.status === 404) res.status(404).text("Not Found");
    else res.status(405).header("Allow", m.allow).text("Method Not Allowed");
    if (req.hasBody) {
      if (req.collecting) this.#bodyTo = req;
      else if (req.expectContinue && !this.#closing) {
        // Its answer is out and the body was not wanted: whether the client
        // sends it now is its choice, so the connection cannot be reused.
        this.#closing = true;
        this.#closeIfDone();
      }
    }
  }

  /** The handler returned a promise: detach its objects, queue its reply. */
  #pending(req: RequestView, res: Reply, result: Promise<void>): void {
    const app = this.app;
    req.detach();
    this.#req = new RequestView(this, app.router.maxParams);
    this.#res = new Reply(this);
    if (!res.sent && req.slot === null) {
      const slot = new Slot();
      this.#queue.push(slot);
      req.slot = slot;
      res.queueTo(slot);
    }
    const reactor = app.reactor;
    reactor.asyncStarted();
    result.then(
      () => {
        reactor.asyncSettled();
        if (!res.sent) {
          app.noReply(req, "resolved");
          res.fail(500);
        }
      },
      (error) => {
        reactor.asyncSettled();
        app.handlerFailed(error, req);
        res.fail(500);
      },
    );
  }

  onBody(data: Uint8Array, start: number, end: number): void {
    const to = this.#bodyTo;
    if (to !== null) to.pushBody(data, start, end);
  }

  onRequest(p: HttpParser): boolean {
    this.#inBody = false;
    const to = this.#bodyTo;
    if (to !== null) {
      this.#bodyTo = null;
      to.endBody();
    }
    if (!p.keepAlive || this.#draining || this.#closing) {
      this.#closing = true;
      this.#closeIfDone();
      return false;
    }
    this.#memoable = p.contentLength <= 0 && !p.chunked;
    // One request per execute(), so that the memo is tried before the next.
    return false;
  }

  onError(status: number, reason: string): void {
    log.debug("fd {fd}: {status} {reason}", { fd: this.conn.fd, status, reason });
    const to = this.#bodyTo;
    if (to !== null) {
      this.#bodyTo = null;
      to.failBody(new Error(`request body invalid: ${reason}`));
    }
    const answered = this.#inBody; // the head was handled: its answer is (or will be) given
    this.#inBody = false;
    this.#closing = true;
    if (!answered) this.#respondError(status);
    this.#closeIfDone();
  }

  /** An error reply with Connection: close, behind the answers already owed. */
  #respondError(status: number): void {
    const res = this.#res;
    let slot: Slot | null = null;
    if (this.#queue.length > 0) {
      slot = new Slot();
      this.#queue.push(slot);
    }
    const batch = this.#beginBatch();
    res.begin(this.app.errorCache, CLOSE, this.#parser.method === METHOD_HEAD, slot);
    res.fail(status);
    if (batch) this.#endBatch();
  }

  /** Expect: 100-continue: the handler asked for the body. */
  sendContinue(req: RequestView): void {
    req.continued = true;
    // Only if nothing is owed before this request's answer, and its body is still to come.
    if (this.#bodyTo !== req && !(this.#inBody && this.#req === req)) return;
    const q = this.#queue;
    if (q.length === 0 || q[0] === req.slot) this.send(CONTINUE_100, 0, CONTINUE_100.length);
  }

  // ---- output, in order ----

  /** A batch of writes is open (corked by us): replies may gather in the run. */
  #batching = false;
  /** The run: `#runCount` direct replies in a row that are the same cached array. */
  #runBytes: Uint8Array | null = null;
  #runCache: HeadCache | null = null;
  #runCount = 0;

  /**
   * Opens a batch: writes gather in the connection's cork buffer, and
   * identical cached replies in the run, until #endBatch. False when a batch
   * is open already (the outer one sends).
   */
  #beginBatch(): boolean {
    const conn = this.conn;
    if (this.#batching || conn.closed || conn.context.corkOwner !== null) return false;
    conn.cork();
    this.#batching = true;
    return true;
  }

  /** Sends the batch: what gathered in the cork buffer, then the run from its prebuilt copies. */
  #endBatch(): void {
    this.#batching = false;
    this.conn.uncork();
    const n = this.#runCount;
    if (n === 0) return;
    const bytes = this.#runBytes!;
    const c = this.#runCache!;
    this.#runCount = 0;
    this.#runBytes = null;
    this.#runCache = null;
    c.runOf(bytes);
    this.conn.writeFrom(c.runPointer!, c.run, n * bytes.length);
  }

  /** A direct reply that is one of `c`'s arrays: joins (or starts) the run. */
  sendCached(bytes: Uint8Array, c: HeadCache): void {
    if (bytes === this.#runBytes && this.#runCount < RUN_MAX) {
      this.#runCount++;
      return;
    }
    this.#spillRun();
    if (!this.#batching || bytes.length > RUN_BYTES_MAX) {
      this.conn.write(bytes);
      return;
    }
    this.#runBytes = bytes;
    this.#runCache = c;
    this.#runCount = 1;
  }

  /** Writes bytes[start, end) after everything before it (the run first). */
  send(bytes: Uint8Array, start: number, end: number): void {
    this.#spillRun();
    this.conn.write(bytes, start, end);
  }

  /** Writes the run into the connection (its cork buffer) now: something else follows it. */
  #spillRun(): void {
    const n = this.#runCount;
    if (n === 0) return;
    const bytes = this.#runBytes!;
    const c = this.#runCache!;
    this.#runCount = 0;
    this.#runBytes = null;
    this.#runCache = null;
    if (n === 1) {
      this.conn.write(bytes);
      return;
    }
    c.runOf(bytes);
    this.conn.write(c.run, 0, n * bytes.length);
  }

  /** A queued reply is ready. */
  settle(slot: Slot, bytes: Uint8Array): void {
    slot.bytes = bytes;
    if (this.#queue[0] === slot) this.#flushQueue();
  }

  #flushQueue(): void {
    const conn = this.conn;
    const q = this.#queue;
    const batch = this.#beginBatch();
    while (q.length > 0 && q[0].bytes !== null) {
      const slot = q.shift()!;
      if (slot.answer !== null) {
        this.#spillRun();
        slot.answer.write(conn, slot.keepAlive, slot.http10, this.app.clock.value);
        continue;
      }
      const bytes = slot.bytes!;
      this.send(bytes, 0, bytes.length);
    }
    if (batch) this.#endBatch();
    if (conn.closed) return;
    this.#resume();
    this.#closeIfDone();
  }

  /** Parses the bytes kept while not reading, if it can go on now; then reads again. */
  #resume(): void {
    const conn = this.conn;
    if (this.#inData || conn.closed || this.#closing) return;
    if (conn.outputFull || this.#queue.length >= MAX_IN_FLIGHT) return;
    const kept = this.#stash;
    if (kept !== null) {
      this.#stash = null;
      this.#inData = true;
      const batch = this.#beginBatch();
      this.#parse(kept, 0, kept.length);
      if (batch) this.#endBatch();
      this.#inData = false;
      if (this.#stash !== null || conn.closed) return;
    }
    if (this.#peerEnded) {
      this.#closing = true;
      this.#closeIfDone();
    } else conn.resumeReading();
  }

  #closeIfDone(): void {
    if (this.#closing && this.#queue.length === 0 && !this.conn.closed) {
      this.#spillRun(); // before the FIN
      this.conn.closeAfterFlush();
    }
  }

  // ---- connection events ----

  lowWater(_conn: Connection): void {
    this.#resume();
  }

  end(_conn: Connection): void {
    // The peer finished sending: answer what was complete, then close.
    this.#peerEnded = true;
    const to = this.#bodyTo;
    if (to !== null) {
      this.#bodyTo = null;
      to.failBody(new Error("the client closed the connection"));
    }
    if (this.#stash === null) {
      this.#closing = true;
      this.#closeIfDone();
    }
  }

  closed(_conn: Connection, reason: CloseReason): void {
    const to = this.#bodyTo;
    if (to !== null) {
      this.#bodyTo = null;
      to.failBody(new Error(`the connection closed (${reason})`));
    }
    for (const slot of this.#queue) slot.answer?.drop();
    this.#queue.length = 0;
    this.#stash = null;
  }

  requestStartedAt(): number {
    return this.#requestStart;
  }

  shutdown(conn: Connection): void {
    this.#draining = true;
    if (this.#parser.idle && !this.#inBody) {
      this.#closing = true;
      if (this.#queue.length === 0) {
        this.#spillRun();
        conn.closeAfterFlush();
      }
    }
  }

  timedOut(conn: Connection, what: TimeoutKind): void {
    if (what === "request" && this.#queue.length === 0 && !this.#closing && !this.#inBody) {
      log.info("fd {fd}: request not complete in time: 408", { fd: conn.fd });
      this.#closing = true;
      this.#respondError(408);
      this.#closeIfDone();
      return;
    }
    conn.close("timeout");
  }
}

// ---------------------------------------------------------------------------
// As a protocol

/**
 * A protocol definition serving `router` with native handlers (for `Server`,
 * or `serveNative`). Not in the registry: it needs a router.
 *
 * @example Usage
 * ```ts ignore
 * const server = Server.createSync({ port: 0, protocol: nativeProtocol(router) });
 * ```
 */
export function nativeProtocol(
  router: Router<NativeHandler>,
  options: NativeOptions = {},
): ProtocolDefinition {
  return {
    name: "native",
    summary: "native handlers on a byte-matching router",
    flags: [],
    create(setup): ProtocolInstance {
      const app = new NativeApp(setup.context.reactor, router, options);
      return {
        connect: (conn) => new NativeConnection(app, conn),
        metrics: () => [
          counter("requests_total", "HTTP requests answered.", app.requests),
          counter(
            "native_handler_errors_total",
            "Native handler exceptions, rejections and missing replies.",
            app.errors,
          ),
          ...(app.files === null ? [] : staticMetrics(app.files)),
        ],
        stop: () => app.close(),
      };
    },
  };
}
