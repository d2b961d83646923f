/**
 * The response side of a `Deno.serve`-compatible app server: writes the web
 * `Response` a fetch handler returned onto a {@link Connection} as HTTP/1.1
 * (or 1.0) bytes, the way `Deno.serve` puts it on the wire.
 *
 * What `Deno.serve` (Deno 2.9, hyper underneath) sends, and so what this
 * module sends, checked against it over raw sockets in `response_test.ts`
 * (status line, header set, body, whether the connection stays open):
 *
 * - Status line: the request's version (`HTTP/1.0` for a 1.0 request), the
 *   code and hyper's standard reason phrase. The Response's `statusText` is
 *   NOT sent; an unregistered code (599) gets an empty phrase: `599 \r\n`.
 * - Headers: the Response's header list in order, names cased as the list
 *   has them, one line per entry (two `Set-Cookie` stay two lines); values
 *   as latin-1 bytes, as hyper sends them. Then `content-length` or
 *   `transfer-encoding: chunked`, `date` (unless the Response has one) and
 *   `connection` when needed. (A response without headers of its own puts
 *   `content-length` last: the order of fields carries no meaning.)
 * - A user `content-length` is replaced by the real length of a static body,
 *   but frames a stream. A user `transfer-encoding` (any value) makes an
 *   HTTP/1.1 GET chunked; HEAD and HTTP/1.0 get `content-length` instead.
 * - Bodies of known length (null, string, bytes, URLSearchParams):
 *   `content-length` (0 for null). No body and no length for 1xx, 204, 205
 *   and 304. HEAD: the would-be `content-length`, no body.
 * - A stream: `transfer-encoding: chunked` on HTTP/1.1, close-delimited on
 *   HTTP/1.0 (then no keep-alive). HEAD: neither header; the stream is
 *   cancelled.
 * - `connection: close` on an HTTP/1.1 response when the request does not
 *   allow keep-alive; `connection: keep-alive` on an HTTP/1.0 response that
 *   keeps the connection; nothing otherwise.
 * - A Response is single-use: sending it consumes its body, so returning the
 *   same Response twice fails the second time (a TypeError, with the
 *   message `Deno.serve` uses; the caller answers 500).
 *
 * Where this module differs on purpose:
 *
 * - A Blob or FormData body goes with `content-length` (its size is known);
 *   `Deno.serve` streams those chunked.
 * - A Response that carries `connection: close` closes the connection after
 *   it (the result is false) and gets no second `connection` line;
 *   `Deno.serve` may add one (even `keep-alive` on HTTP/1.0) and keeps the
 *   connection open.
 * - An HTTP/1.0 keep-alive response framed by a length (a stream with a
 *   `content-length`, a Blob) or to HEAD keeps the connection, as its
 *   `connection: keep-alive` says; `Deno.serve` says so and closes.
 * - On the public-API path only: names come lower-cased and repeated ones
 *   joined (`Headers` iteration, Set-Cookie aside), a body whose chunks are
 *   all there at once gets a `content-length` (Deno.serve may chunk it),
 *   and a Blob is chunked.
 *
 * Fast path: Deno 2.9 keeps a Response's state behind symbols (the
 * `Symbol(response)` slot with `status`, `headerList` and `body`, plus the
 * "lazy static body" a `new Response("text")` keeps as a bare string until
 * someone reads its headers or body). They are looked up once, at module
 * load, by description, and checked against the public API on probe
 * responses; if anything differs (another Deno), every call uses the public
 * API instead (`status`, `headers`, the body stream), logged once at debug
 * level. A string or byte body then costs one pass over the header list,
 * one head string encoded into a reused scratch buffer with the body behind
 * it, and one `Connection.write`, all synchronous; without headers of its
 * own (`new Response(text)`, `Response.json(x)`, bytes) the head's bytes
 * come from a cache (per status, type and date) and an ASCII body is copied
 * by a loop: ~35 ns per response (bench/response_bench.ts).
 *
 * @module
 */

import { getLogger } from "../../../log/mod.ts";
import type { Connection } from "../../connection.ts";
import { latin1Bytes } from "./request.ts";

const log = getLogger(["reactor", "http", "response"]);

/** What the request side knows about the exchange a response answers. */
export interface ResponseTarget {
  /** The request was HEAD: headers as for GET, no body. */
  head: boolean;
  /** The request was HTTP/1.0: the status line says so, and streams are close-delimited. */
  http10: boolean;
  /** The request allows keep-alive (HTTP/1.1 without `Connection: close`, or 1.0 with `keep-alive`). */
  keepAlive: boolean;
  /** The `date` header's value, an IMF-fixdate the caller caches (once a second). */
  date: string;
}

/** What `writeResponse` did, counted since the module loaded (tests and /metrics). */
export interface ResponseCounters {
  /** Responses read through Deno's internal slots (the fast path). */
  internal: number;
  /** Responses read through the public API (no usable internals, or not a Deno Response). */
  publicApi: number;
  /** Responses written completely in the call itself (`writeResponse` returned a boolean). */
  sync: number;
  /** Responses that needed awaits (streams, very large bodies, the public API's body reads). */
  async: number;
  /** Streamed bodies that failed midway (the stream errored or gave a non-Uint8Array chunk). */
  streamErrors: number;
  /** Streams cancelled because the connection closed before they ended. */
  streamsCancelled: number;
}

/** The counters of every `writeResponse` in this process. */
export const responseCounters: ResponseCounters = {
  internal: 0,
  publicApi: 0,
  sync: 0,
  async: 0,
  streamErrors: 0,
  streamsCancelled: 0,
};

// ---------------------------------------------------------------------------
// Sizes

/** The scratch buffer a head (and a small body behind it) is built in. */
const SCRATCH_BYTES = 64 << 10;
/** Heads up to this size are built in the scratch; larger ones are encoded apart. */
const HEAD_ROOM = 16 << 10;
/** Byte bodies up to this size are copied behind the head: one write. */
const SMALL_BODY = 16 << 10;
/** String bodies are encoded into the scratch behind HEAD_ROOM when they fit here. */
const BODY_ROOM = SCRATCH_BYTES - HEAD_ROOM - 16;
/** Static bodies larger than this go in slices that wait for the peer (bounded memory). */
const LARGE_BODY = 1 << 20;
/** Slice size for those. */
const SLICE = 256 << 10;
/** Per stream: output gathered while the next chunk is already there, sent in one write. */
const FRAME_BYTES = 16 << 10;
/** String bodies up to this long are tried in one encoding pass with the head (ASCII). */
const ONE_PASS_TEXT = 4096;
/** Public-API path: body bytes read ahead to find a short body's length. */
const PEEK_BYTES = 64 << 10;

const SCRATCH = new Uint8Array(SCRATCH_BYTES);
const HEAD_VIEW = SCRATCH.subarray(0, HEAD_ROOM);
const BODY_VIEW = SCRATCH.subarray(HEAD_ROOM, HEAD_ROOM + BODY_ROOM);
const encoder = new TextEncoder();

// ---------------------------------------------------------------------------
// Status lines

/** hyper's canonical reason phrases, as Deno.serve sends them (checked for 200-599 in the test). */
const REASONS: Record<number, string> = {
  100: "Continue",
  101: "Switching Protocols",
  102: "Processing",
  103: "Early Hints",
  200: "OK",
  201: "Created",
  202: "Accepted",
  203: "Non Authoritative Information",
  204: "No Content",
  205: "Reset Content",
  206: "Partial Content",
  207: "Multi-Status",
  208: "Already Reported",
  226: "IM Used",
  300: "Multiple Choices",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  305: "Use Proxy",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  402: "Payment Required",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  407: "Proxy Authentication Required",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  411: "Length Required",
  412: "Precondition Failed",
  413: "Payload Too Large",
  414: "URI Too Long",
  415: "Unsupported Media Type",
  416: "Range Not Satisfiable",
  417: "Expectation Failed",
  418: "I'm a teapot",
  421: "Misdirected Request",
  422: "Unprocessable Entity",
  423: "Locked",
  424: "Failed Dependency",
  425: "Too Early",
  426: "Upgrade Required",
  428: "Precondition Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  451: "Unavailable For Legal Reasons",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
  506: "Variant Also Negotiates",
  507: "Insufficient Storage",
  508: "Loop Detected",
  510: "Not Extended",
  511: "Network Authentication Required",
};

/** The reason phrase `Deno.serve` sends for `status` ("" when it has none). */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "";
}

const STATUS_11: string[] = [];
const STATUS_10: string[] = [];
for (let s = 100; s < 600; s++) {
  STATUS_11[s] = `HTTP/1.1 ${s} ${reasonPhrase(s)}\r\n`;
  STATUS_10[s] = `HTTP/1.0 ${s} ${reasonPhrase(s)}\r\n`;
}

/** The status line `Deno.serve` sends for `status`, CRLF included (HTTP/1.0 when `http10`). */
export function statusLine(status: number, http10: boolean): string {
  const line = http10 ? STATUS_10[status] : STATUS_11[status];
  return line !== undefined ? line : `HTTP/1.${http10 ? 0 : 1} ${status} \r\n`;
}

/** The interim answer to `Expect: 100-continue` (RFC 9110 10.1.1), sent once the handler reads the body. */
export const CONTINUE_100: Uint8Array = latin1Bytes("HTTP/1.1 100 Continue\r\n\r\n");

/** Statuses that never carry a body nor a length (`Deno.serve` sends neither). */
function bodiless(status: number): boolean {
  return status < 200 || status === 204 || status === 205 || status === 304;
}

// ---------------------------------------------------------------------------
// Deno's internals, found once

/** The inner response as Deno 2.9 keeps it (only what is read here). */
interface InnerResponse {
  type: string;
  status: number;
  headerList: [string, string][];
  body: InnerBody | null;
  bodyDecoded?: boolean;
}

/** The inner body: a static `{ body, consumed }` or a ReadableStream, its source and length. */
interface InnerBody {
  streamOrStatic: { body?: unknown; consumed?: unknown; locked?: boolean };
  source: unknown;
  length: number | null;
}

/** The symbol-keyed slots of a Response, once found. */
interface Internals {
  response: symbol;
  lazyBody: symbol;
  lazyType: symbol;
  consumed: symbol;
}

const TEXT_PLAIN = "text/plain;charset=UTF-8";

/**
 * Finds the slots by description on a probe Response, then checks that
 * reading them gives what the public API says on a few more. Returns the
 * slots, or why they cannot be used.
 */
function findInternals(): Internals | string {
  try {
    const probe = new Response("probe");
    const symbols = Object.getOwnPropertySymbols(probe);
    const find = (d: string) => symbols.find((s) => s.description === d);
    const response = find("response");
    const lazyBody = find("lazy static body");
    const lazyType = find("lazy static content type");
    const consumed = find("serve fast consumed");
    if (!response || !lazyBody || !lazyType || !consumed) {
      return `missing slots among ${symbols.map(String).join(", ")}`;
    }
    const slots: Internals = { response, lazyBody, lazyType, consumed };
    const cases: [() => Response, string | number[] | null, number][] = [
      [() => new Response("probe"), "probe", 200],
      [() => Response.json({ a: 1 }), '{"a":1}', 200],
      [() => new Response("x", { headers: { "content-type": "application/json" } }), "x", 200],
      [() => new Response("y", { status: 201, headers: [["x-a", "1"], ["X-A", "2"]] }), "y", 201],
      [() => new Response(new Uint8Array([1, 2]), { status: 404, statusText: "No" }), [1, 2], 404],
      [() => new Response(new URLSearchParams("a=1")), "a=1", 200],
      [() => new Response(null, { status: 204 }), null, 204],
    ];
    for (const [make, body, status] of cases) {
      const ours = make();
      const read = readInternal(ours, slots);
      if (typeof read === "string") return read;
      const theirs = make();
      const want = [...theirs.headers].map(([k, v]) => `${k}: ${v}`).sort().join("\n");
      const got = [...new Headers(read.headers)].map(([k, v]) => `${k}: ${v}`).sort().join("\n");
      if (want !== got) return `headers differ: ${JSON.stringify(got)} vs ${JSON.stringify(want)}`;
      if (read.status !== theirs.status || read.status !== status) return "status differs";
      const b = read.body;
      const same = body === null
        ? b === null
        : typeof body === "string"
        ? b === body
        : b instanceof Uint8Array && b.join() === body.join();
      if (!same) return `body differs for ${String(body)}`;
      // Marking the body consumed must make the public API agree.
      if (body !== null) {
        (ours as unknown as Record<symbol, unknown>)[consumed] = true;
        if (!ours.bodyUsed) return "the consumed slot does not mark the body used";
      }
    }
    const blob = new Response(new Blob(["abc"]));
    const inner = (blob as unknown as Record<symbol, InnerResponse>)[response];
    if (inner.body === null || inner.body.length !== 3) {
      return "a Blob body's length is not where expected";
    }
    return slots;
  } catch (error) {
    return `probe threw: ${error}`;
  }
}

/** Reads a probe response through the slots (the shape check only; not the hot path). */
function readInternal(
  res: Response,
  slots: Internals,
): { status: number; headers: [string, string][]; body: unknown } | string {
  const r = res as unknown as Record<symbol, unknown>;
  const inner = r[slots.response] as InnerResponse | undefined;
  if (typeof inner !== "object" || inner === null) return "no inner response";
  if (!Array.isArray(inner.headerList) || typeof inner.status !== "number") return "inner shape";
  const headers = inner.headerList.slice();
  const lazy = r[slots.lazyBody];
  const lazyType = r[slots.lazyType];
  if (lazy !== null && typeof lazy !== "string") return "lazy body is not a string";
  if (lazyType !== null && typeof lazyType !== "string") return "lazy type is not a string";
  const type = typeof lazy === "string" ? (lazyType ?? TEXT_PLAIN) : lazyType;
  if (type !== null) headers.push(["content-type", type]);
  if (typeof lazy === "string") return { status: inner.status, headers, body: lazy };
  if (inner.body === null) return { status: inner.status, headers, body: null };
  const sos = inner.body.streamOrStatic;
  if (typeof sos !== "object" || sos === null || sos.consumed !== false) return "static body shape";
  return { status: inner.status, headers, body: sos.body };
}

const FOUND = findInternals();
const INTERNALS: Internals | null = typeof FOUND === "string" ? null : FOUND;
let useInternals = INTERNALS !== null;
let loggedFallback = false;
// The slots as plain constants for the hot path (dummies when not found).
const S_RESPONSE = INTERNALS?.response ?? Symbol("unused");
const S_LAZY_BODY = INTERNALS?.lazyBody ?? Symbol("unused");
const S_LAZY_TYPE = INTERNALS?.lazyType ?? Symbol("unused");
const S_CONSUMED = INTERNALS?.consumed ?? Symbol("unused");
// Only for the case of a lone content-type's name (cosmetic): not required.
const S_FAST_STATUS = Object.getOwnPropertySymbols(new Response(null))
  .find((s) => s.description === "serve fast status") ?? Symbol("unused");

/**
 * Whether responses are read through Deno's internal slots. `enable` (for
 * tests and benchmarks) turns that off, or back on when the slots were
 * found; returns the setting in force.
 */
export function useResponseInternals(enable?: boolean): boolean {
  if (enable !== undefined) useInternals = enable && INTERNALS !== null;
  return useInternals;
}

// ---------------------------------------------------------------------------
// Errors

/** The TypeError `Deno.serve` raises for a Response whose body was already read. */
function consumedError(): TypeError {
  return new TypeError(
    "The body of the Response returned from the serve handler has already been consumed",
  );
}

function errorResponseError(): TypeError {
  return new TypeError(
    "Return value from serve handler must not be an error response (like Response.error())",
  );
}

// ---------------------------------------------------------------------------
// Headers

// What the last userHeaders() call saw (single-threaded, read right after).
let sawDate = false; // the Response has its own date header
let sawClose = false; // ... a connection header with the close token
let sawTransferEncoding = false; // ... a transfer-encoding header (dropped from the copy)
let sawLength = -1; // ... its content-length (dropped), -1 none or invalid

const CLOSE_TOKEN = /(?:^|,)[ \t]*close[ \t]*(?:,|$)/i;
const DIGITS = /^[0-9]{1,15}$/;

/**
 * The Response's header lines, minus the framing headers this module writes
 * itself (content-length, transfer-encoding), noting what it saw. Names are
 * compared by length first: most headers are never lowercased.
 */
function userHeaders(list: readonly (readonly [string, string])[], decoded: boolean): string {
  sawDate = sawClose = sawTransferEncoding = false;
  sawLength = -1;
  let s = "";
  for (let i = 0; i < list.length; i++) {
    const pair = list[i];
    const name = pair[0];
    const value = pair[1];
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === "date") sawDate = true;
        break;
      case 10:
        if (name.toLowerCase() === "connection" && CLOSE_TOKEN.test(value)) sawClose = true;
        break;
      case 14:
        if (name.toLowerCase() === "content-length") {
          sawLength = DIGITS.test(value.trim()) ? Number(value.trim()) : -1;
          continue;
        }
        break;
      case 16:
        // A body fetch() decoded: its content-encoding describes the wire, not it.
        if (decoded && name.toLowerCase() === "content-encoding") continue;
        break;
      case 17:
        if (name.toLowerCase() === "transfer-encoding") {
          sawTransferEncoding = true;
          continue;
        }
        break;
    }
    s += name + ": " + value + "\r\n";
  }
  if (decoded) {
    sawLength = -1;
    sawTransferEncoding = false;
  }
  return s;
}

// The usual head tails for the current date, rebuilt when the date changes.
let tailDate = "";
let tailPlain = "\r\n"; // date, end (1.1 keep-alive; 1.0 closing)
let tailClose = "\r\n"; // date, connection: close, end (1.1 closing)
let tailKeep = "\r\n"; // date, connection: keep-alive, end (1.0 keep-alive)

/** The date and connection lines and the blank line that ends the head. */
function headTail(target: ResponseTarget, keep: boolean): string {
  if (sawDate) {
    // The Response brought its own date.
    if (target.http10) return keep ? "connection: keep-alive\r\n\r\n" : "\r\n";
    return !target.keepAlive && !sawClose ? "connection: close\r\n\r\n" : "\r\n";
  }
  if (target.date !== tailDate) {
    tailDate = target.date;
    const date = "date: " + tailDate + "\r\n";
    tailPlain = date + "\r\n";
    tailClose = date + "connection: close\r\n\r\n";
    tailKeep = date + "connection: keep-alive\r\n\r\n";
  }
  if (target.http10) return keep ? tailKeep : tailPlain;
  return !target.keepAlive && !sawClose ? tailClose : tailPlain;
}

/**
 * Encodes `head` at the start of the scratch; returns its length, or -1
 * when it must be sent from its own array (too large, or a latin-1 value
 * that UTF-8 would turn into two bytes).
 */
function headIntoScratch(head: string): number {
  const r = encoder.encodeInto(head, HEAD_VIEW);
  return r.read === head.length && r.written === head.length ? r.written : -1;
}

// ---------------------------------------------------------------------------
// The entry point

/**
 * Writes `res` to `conn`. Returns a boolean (synchronously) when everything
 * was handed to the connection with no await needed (the usual case: true,
 * or false when the connection must close); otherwise a Promise resolving
 * once the whole response was written (or the connection closed). The
 * resolved/returned value: whether the connection may be kept alive after
 * this response.
 *
 * When it is false the caller closes the connection once the output is
 * flushed (`conn.closeAfterFlush()`). `writeResponse` closes it itself only
 * when the body's end is the close (an HTTP/1.0 stream) or the body failed:
 * a stream that errors midway gets a FIN after the bytes already framed, so
 * a chunked body lacks its terminating `0` chunk and a sized one falls
 * short (what `Deno.serve` does); a close-delimited one gets an RST
 * (`conn.abort()`), since there a FIN would mark the body complete. While
 * a Promise is pending, write nothing else to `conn`; the reactor is told
 * (`asyncStarted`/`asyncSettled`) so it does not hold the JS thread in its
 * wait meanwhile.
 *
 * Throws a TypeError, before writing anything, for a Response whose body
 * was already used (the same Response returned twice, or read by the
 * handler), for `Response.error()`, and for a body stream someone else has
 * locked: the caller answers 500.
 *
 * @param conn the connection to write to
 * @param res the Response the handler returned
 * @param target what the request asked for (HEAD, HTTP/1.0, keep-alive) and the date
 */
export function writeResponse(
  conn: Connection,
  res: Response,
  target: ResponseTarget,
): boolean | Promise<boolean> {
  if (useInternals) {
    const r = res as unknown as Record<symbol, unknown>;
    const inner = r[S_RESPONSE] as InnerResponse | undefined;
    if (inner !== undefined) {
      responseCounters.internal++;
      if (r[S_CONSUMED] === true) throw consumedError();
      const status = inner.status;
      if (status === 0) throw errorResponseError();
      const lazy = r[S_LAZY_BODY];
      const lazyType = r[S_LAZY_TYPE] as string | null;
      if (typeof lazy === "string") {
        // new Response("text") or Response.json(x): the body is this string
        // and the content type this one (Deno's default for a string).
        r[S_CONSUMED] = true;
        if (
          inner.headerList.length === 0 &&
          writeShort(conn, target, status, lazyType ?? TEXT_PLAIN, lazy)
        ) {
          responseCounters.sync++;
          return target.keepAlive;
        }
        return writeStatic(
          conn,
          target,
          status,
          inner.headerList,
          false,
          lazyType ?? TEXT_PLAIN,
          lazy,
        );
      }
      const body = inner.body;
      const decoded = inner.bodyDecoded === true;
      if (body === null) {
        return writeStatic(conn, target, status, inner.headerList, decoded, lazyType, null);
      }
      const sos = body.streamOrStatic;
      const used = sos.consumed;
      if (used === false) {
        const bytes = sos.body;
        if (typeof bytes === "string" || bytes instanceof Uint8Array) {
          return writeInnerStatic(conn, target, r, inner, decoded, lazyType, bytes);
        }
        responseCounters.internal--; // another static kind (none in Deno 2.9): the public way
      } else if (used === true) {
        throw consumedError();
      } else {
        // A stream: made for a Blob, FormData or a ReadableStream, or for a
        // static body whose `body` getter ran. An unread stream over a static
        // source is that source.
        if (res.bodyUsed) throw consumedError();
        const source = body.source;
        if ((typeof source === "string" || source instanceof Uint8Array) && sos.locked === false) {
          return writeInnerStatic(conn, target, r, inner, decoded, lazyType, source);
        }
        const length = typeof body.length === "number" && !decoded ? body.length : -1;
        return writeStream(
          conn,
          target,
          status,
          inner.headerList,
          decoded,
          lazyType,
          res.body!,
          length,
          null,
        );
      }
    }
  }
  return writePublic(conn, res, target);
}

const NO_HEADERS: [string, string][] = [];

/** A static body read from the inner response; marks the Response consumed, as Deno.serve does. */
function writeInnerStatic(
  conn: Connection,
  target: ResponseTarget,
  r: Record<symbol, unknown>,
  inner: InnerResponse,
  decoded: boolean,
  lazyType: string | null,
  body: string | Uint8Array,
): boolean | Promise<boolean> {
  r[S_CONSUMED] = true;
  let list = inner.headerList;
  let type = lazyType;
  if (list.length === 1 && type === null && r[S_FAST_STATUS] === 200) {
    // Deno.serve's own fast path (a 200 whose only header is its content
    // type, headers never read) writes the name in lower case.
    const name = list[0][0];
    if (name.length === 12 && name.toLowerCase() === "content-type") {
      type = list[0][1];
      list = NO_HEADERS;
    }
  }
  if (
    list.length === 0 && !inner.bodyDecoded && writeShort(conn, target, inner.status, type, body)
  ) {
    responseCounters.sync++;
    return target.keepAlive;
  }
  return writeStatic(conn, target, inner.status, list, decoded, type, body);
}

// ---------------------------------------------------------------------------
// Short bodies without headers: head bytes cached

/** Text bodies up to this many chars take `writeShort`. */
const SHORT_TEXT = 1024;

/**
 * The encoded head of a response without headers of its own (status line,
 * content type if any, date, connection, then `content-length: `), for one
 * status, type and connection case. Dropped when the date changes.
 */
interface CachedHead {
  status: number;
  type: string | null;
  variant: number;
  bytes: Uint8Array;
}

let cachedHeads: CachedHead[] = [];
let cachedHeadsDate = "";

function cachedHead(
  status: number,
  type: string | null,
  target: ResponseTarget,
): CachedHead | null {
  if (target.date !== cachedHeadsDate) {
    cachedHeads = [];
    cachedHeadsDate = target.date;
  }
  // 0: 1.1 keep-alive, 1: 1.1 close, 2: 1.0 keep-alive, 3: 1.0 closing
  const variant = (target.http10 ? 2 : 0) + (target.keepAlive ? 0 : 1);
  for (let i = 0; i < cachedHeads.length; i++) {
    const c = cachedHeads[i];
    if (c.status === status && c.type === type && c.variant === variant) return c;
  }
  const head = statusLine(status, target.http10) +
    (type === null ? "" : "content-type: " + type + "\r\n") + "date: " + target.date + "\r\n" +
    (variant === 1 ? "connection: close\r\n" : variant === 2 ? "connection: keep-alive\r\n" : "") +
    "content-length: ";
  const bytes = encoder.encode(head);
  // A non-ASCII or huge content type: the general way.
  if (bytes.length !== head.length || bytes.length > 2048) return null;
  const entry = { status, type, variant, bytes };
  if (cachedHeads.length >= 8) cachedHeads.shift();
  cachedHeads.push(entry);
  return entry;
}

/**
 * A response without headers of its own and a short body (text up to 1024
 * chars, bytes up to 16 KiB): the cached head, the length's digits and the
 * body assembled in one place, one write. That place is the connection's
 * cork buffer when it is corked (the answers to one read; nothing copied
 * after), else the scratch. An ASCII text is copied by a loop, with no
 * encoder call: its fixed cost (~60 ns) is most of what encoding a short
 * head and body costs. False, with nothing written, when it does not apply
 * (a non-ASCII content type): the general way does.
 */
function writeShort(
  conn: Connection,
  target: ResponseTarget,
  status: number,
  type: string | null,
  body: string | Uint8Array,
): boolean {
  const text = typeof body === "string";
  const n = body.length;
  if (n > (text ? SHORT_TEXT : SMALL_BODY)) return false;
  const head = cachedHead(status, type, target);
  if (head === null) return false;
  // An ASCII text or bytes: n bytes of body behind the head, the digits and the blank line.
  const at = conn.corkRoom(head.bytes.length + 9 + n);
  const buf = at >= 0 ? conn.context.corkBuffer : SCRATCH;
  const end = assembleShort(buf, at >= 0 ? at : 0, head.bytes, target.head, body);
  if (end >= 0 && at >= 0) conn.corkWritten(end - at);
  else conn.write(SCRATCH, 0, end >= 0 ? end : assembleEncoded(head.bytes, body as string));
  return true;
}

/**
 * Writes head, length and body (none for HEAD) into `buf` from `base`;
 * returns where they end, or -1 for a non-ASCII text to send (nothing
 * usable written: `assembleEncoded` does those). `buf` has room for the
 * head, 9 bytes and `body.length` bytes.
 */
function assembleShort(
  buf: Uint8Array,
  base: number,
  headBytes: Uint8Array,
  headOnly: boolean,
  body: string | Uint8Array,
): number {
  const n = body.length;
  let p = base + headBytes.length;
  let length = n; // the body's bytes
  if (typeof body === "string") {
    // ASCII: the chars straight behind where the head will end (the
    // digits are at most 4 here, the blank line 4), checked on the way.
    let i = 0;
    if (headOnly) {
      while (i < n && body.charCodeAt(i) < 128) i++;
      if (i < n) length = i + utf8Length(body, i); // not sent: only its length
    } else {
      const at = p + digitCount(n) + 4;
      for (; i < n; i++) {
        const c = body.charCodeAt(i);
        if (c > 127) return -1;
        buf[at + i] = c;
      }
    }
  }
  buf.set(headBytes, base);
  p = lengthAndBlankLine(buf, p, length);
  if (!headOnly) {
    if (typeof body !== "string") buf.set(body, p);
    p += length;
  }
  return p;
}

/** A non-ASCII text body and its head, into the scratch; returns their length. */
function assembleEncoded(headBytes: Uint8Array, body: string): number {
  const length = encoder.encodeInto(body, BODY_VIEW).written; // short: it always fits
  SCRATCH.set(headBytes, 0);
  const p = lengthAndBlankLine(SCRATCH, headBytes.length, length);
  SCRATCH.copyWithin(p, HEAD_ROOM, HEAD_ROOM + length);
  return p + length;
}

/** Writes `length`'s digits and CRLF CRLF at `buf[p]`; returns where they end. */
function lengthAndBlankLine(buf: Uint8Array, p: number, length: number): number {
  const digits = digitCount(length);
  for (let i = digits - 1, v = length; i >= 0; i--, v = (v / 10) | 0) {
    buf[p + i] = 48 + (v % 10);
  }
  p += digits;
  buf[p] = 13;
  buf[p + 1] = 10;
  buf[p + 2] = 13;
  buf[p + 3] = 10;
  return p + 4;
}

/** Decimal digits of `n` (0 <= n < 100,000: a short body's length). */
function digitCount(n: number): number {
  return n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10000 ? 4 : 5;
}

/**
 * UTF-8 bytes of `s` from code unit `from` on, as TextEncoder writes them
 * (a lone surrogate becomes U+FFFD, three bytes).
 */
function utf8Length(s: string, from: number): number {
  let bytes = 0;
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

// ---------------------------------------------------------------------------
// Static bodies

/**
 * A body whose bytes are at hand (or none): head and body in one write when
 * they fit the scratch, else the head, then the body (in slices that wait
 * for the peer when it is very large).
 */
function writeStatic(
  conn: Connection,
  target: ResponseTarget,
  status: number,
  list: readonly (readonly [string, string])[],
  decoded: boolean,
  contentType: string | null,
  body: string | Uint8Array | null,
): boolean | Promise<boolean> {
  const block = userHeaders(list, decoded);
  const noBody = bodiless(status);
  const keep = target.keepAlive && !sawClose;
  // hyper: a transfer-encoding header from the app makes an HTTP/1.1 GET
  // chunked even with a known length.
  const chunked = sawTransferEncoding && !noBody && !target.head && !target.http10;
  let head = statusLine(status, target.http10) + block;
  if (contentType !== null) head += "content-type: " + contentType + "\r\n";
  if (
    typeof body === "string" && body.length <= ONE_PASS_TEXT && !noBody && !chunked && !target.head
  ) {
    // The usual case: guess the body is ASCII (its UTF-8 length is its
    // length) and encode head and body in one pass; a non-ASCII byte in
    // either shows as written !== read, and the general way below redoes it.
    const all = head + "content-length: " + body.length + "\r\n" + headTail(target, keep) + body;
    const r = encoder.encodeInto(all, SCRATCH);
    if (r.written === all.length && r.read === all.length) {
      conn.write(SCRATCH, 0, r.written);
      responseCounters.sync++;
      return keep;
    }
  }
  let length = 0;
  let bytes: Uint8Array | null = null; // the body, when not encoded into the scratch
  let encoded = false; // the body is in BODY_VIEW
  if (body !== null && !noBody) {
    if (typeof body === "string") {
      if (body.length <= BODY_ROOM) {
        const r = encoder.encodeInto(body, BODY_VIEW);
        if (r.read === body.length) {
          length = r.written;
          encoded = true;
        }
      }
      if (!encoded) {
        bytes = encoder.encode(body);
        length = bytes.length;
      }
    } else {
      bytes = body;
      length = body.length;
    }
  }
  if (!noBody) {
    // (A HEAD response keeps the app's own content-length, as Deno.serve's does.)
    const declared = target.head && sawLength >= 0 ? sawLength : length;
    head += chunked ? "transfer-encoding: chunked\r\n" : "content-length: " + declared + "\r\n";
  }
  head += headTail(target, keep);
  const send = !noBody && !target.head ? length : 0;
  let suffix = "";
  if (chunked) {
    // The body as one chunk; an empty one is just the last chunk.
    head += send > 0 ? send.toString(16) + "\r\n" : "0\r\n\r\n";
    if (send > 0) suffix = "\r\n0\r\n\r\n";
  }
  const headLength = headIntoScratch(head);
  if (headLength >= 0 && (send === 0 || encoded || send <= SMALL_BODY)) {
    // One write: the head, the body behind it, the chunked suffix if any.
    let end = headLength;
    if (send > 0) {
      if (encoded) SCRATCH.copyWithin(headLength, HEAD_ROOM, HEAD_ROOM + send);
      else SCRATCH.set(bytes!, headLength);
      end += send;
      for (let i = 0; i < suffix.length; i++) SCRATCH[end++] = suffix.charCodeAt(i);
    }
    conn.write(SCRATCH, 0, end);
    responseCounters.sync++;
    return keep;
  }
  // The head apart, then the body.
  if (headLength >= 0) conn.write(SCRATCH, 0, headLength);
  else conn.write(latin1Bytes(head));
  if (send === 0) {
    responseCounters.sync++;
    return keep;
  }
  if (encoded) {
    // The body sits in the scratch behind HEAD_ROOM; the write takes or copies it.
    conn.write(SCRATCH, HEAD_ROOM, HEAD_ROOM + send);
  } else if (send > LARGE_BODY) {
    return writeSlices(conn, bytes!, suffix, keep);
  } else {
    conn.write(bytes!);
  }
  if (suffix !== "") conn.write(encoder.encode(suffix));
  responseCounters.sync++;
  return keep;
}

/** A very large static body in slices, each after the peer took the last ones. */
async function writeSlices(
  conn: Connection,
  body: Uint8Array,
  suffix: string,
  keep: boolean,
): Promise<boolean> {
  responseCounters.async++;
  const reactor = conn.reactor;
  reactor.asyncStarted();
  try {
    for (let offset = 0; offset < body.length;) {
      if (conn.outputFull) await conn.whenWritable();
      if (conn.closed) return false;
      const end = Math.min(offset + SLICE, body.length);
      conn.write(body, offset, end);
      offset = end;
    }
    if (suffix !== "") conn.write(encoder.encode(suffix));
    return keep && !conn.closed;
  } finally {
    reactor.asyncSettled();
  }
}

// ---------------------------------------------------------------------------
// Streams

const CHUNKED = 0; // transfer-encoding: chunked
const SIZED = 1; // content-length known ahead
const CLOSE_DELIMITED = 2; // HTTP/1.0: the body ends at the close

/** Streams waiting for their next chunk, by connection: see `responseConnectionClosed`. */
const waiting = new WeakMap<Connection, () => void>();
const NOT_YET = Symbol("not yet");
const NOT_YET_PROMISE: Promise<typeof NOT_YET> = Promise.resolve(NOT_YET);
const CLOSED = Symbol("closed");

/**
 * Tells a response stream writing to `conn` that it closed: call it from
 * the protocol's `closed`. A stream waiting for its next chunk (an idle
 * event stream) is then cancelled at once; without the call it is
 * cancelled when that chunk arrives or when the output it fills drains.
 */
export function responseConnectionClosed(conn: Connection): void {
  const wake = waiting.get(conn);
  if (wake !== undefined) wake();
}

/**
 * A body of unknown length, or known but not at hand (a Blob): framed by
 * `content-length` when a length is known, chunked on HTTP/1.1, else
 * delimited by the close.
 */
function writeStream(
  conn: Connection,
  target: ResponseTarget,
  status: number,
  list: readonly (readonly [string, string])[],
  decoded: boolean,
  contentType: string | null,
  stream: ReadableStream<Uint8Array>,
  knownLength: number,
  read: Uint8Array[] | null,
): boolean | Promise<boolean> {
  if (bodiless(status)) {
    stream.cancel().catch(() => {});
    return writeStatic(conn, target, status, list, decoded, contentType, null);
  }
  const block = userHeaders(list, decoded);
  let framing: number;
  let declared = -1;
  if (sawTransferEncoding && !target.http10 && !target.head) {
    framing = CHUNKED;
  } else if (sawLength >= 0) {
    framing = SIZED;
    declared = sawLength;
  } else if (knownLength >= 0) {
    framing = SIZED;
    declared = knownLength;
  } else {
    framing = target.http10 ? CLOSE_DELIMITED : CHUNKED;
  }
  const keep = target.keepAlive && !sawClose && (target.head || framing !== CLOSE_DELIMITED);
  let head = statusLine(status, target.http10) + block;
  if (contentType !== null) head += "content-type: " + contentType + "\r\n";
  if (framing === SIZED) head += "content-length: " + declared + "\r\n";
  else if (framing === CHUNKED && !target.head) head += "transfer-encoding: chunked\r\n";
  head += headTail(target, keep);
  if (target.head) {
    stream.cancel().catch(() => {});
    const n = headIntoScratch(head);
    if (n >= 0) conn.write(SCRATCH, 0, n);
    else conn.write(latin1Bytes(head));
    responseCounters.sync++;
    return keep;
  }
  const reader = stream.getReader(); // throws if locked: nothing written yet
  if (conn.closed) {
    reader.cancel().catch(() => {});
    responseCounters.sync++;
    return false;
  }
  const n = headIntoScratch(head);
  const headBytes = n >= 0 ? SCRATCH.slice(0, n) : latin1Bytes(head);
  return pump(conn, reader, framing, declared, keep, headBytes, read);
}

/**
 * Moves a stream's chunks to the connection. Output is gathered (head,
 * chunk frames) while the next chunk is already there and sent when it is
 * not, or when 16 KiB are gathered; the next chunk is read only while the
 * connection is below its high-water mark.
 */
async function pump(
  conn: Connection,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  framing: number,
  declared: number,
  keep: boolean,
  head: Uint8Array,
  read: Uint8Array[] | null,
): Promise<boolean> {
  responseCounters.async++;
  const reactor = conn.reactor;
  reactor.asyncStarted();
  let buf = new Uint8Array(FRAME_BYTES);
  let len = 0;
  let sent = 0; // body bytes framed so far
  let full = false; // a write said stop: wait for low water before reading on
  let tooLong = false;

  const flush = (): void => {
    if (len === 0) return;
    if (!conn.write(buf, 0, len)) full = true;
    len = 0;
  };
  const put = (bytes: Uint8Array, start: number, end: number): void => {
    const n = end - start;
    if (len + n > buf.length) flush();
    if (n > buf.length) {
      if (!conn.write(bytes, start, end)) full = true;
      return;
    }
    buf.set(start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end), len);
    len += n;
  };
  const ascii = (s: string): void => {
    if (len + s.length > buf.length) flush();
    for (let i = 0; i < s.length; i++) buf[len++] = s.charCodeAt(i);
  };
  const frame = (chunk: Uint8Array): void => {
    const n = chunk.length;
    if (n === 0) return; // an empty chunk would end a chunked body
    if (framing === CHUNKED) {
      ascii(n.toString(16) + "\r\n");
      put(chunk, 0, n);
      ascii("\r\n");
      sent += n;
    } else if (framing === SIZED) {
      const take = Math.min(n, declared - sent);
      if (take > 0) put(chunk, 0, take);
      sent += take;
      if (take < n) tooLong = true;
    } else {
      put(chunk, 0, n);
      sent += n;
    }
  };
  const cancel = async (why: string): Promise<false> => {
    responseCounters.streamsCancelled++;
    try {
      await reader.cancel(new Error(why));
    } catch { /* the source's cancel threw: nothing more to do */ }
    return false;
  };

  let wake: (() => void) | null = null;
  const closed = new Promise<typeof CLOSED>((resolve) => (wake = () => resolve(CLOSED)));
  waiting.set(conn, wake!);
  try {
    if (head.length > buf.length) {
      if (!conn.write(head)) full = true;
    } else {
      buf.set(head, 0);
      len = head.length;
    }
    if (read !== null) { for (const chunk of read) frame(chunk); }
    for (;;) {
      if (tooLong) {
        // More than the content-length said: what it said is sent, the rest
        // would be read as the next response.
        flush();
        await cancel("the stream is longer than its content-length");
        conn.closeAfterFlush();
        return false;
      }
      if (full) {
        await Promise.race([conn.whenWritable(), closed]);
        full = false;
        if (conn.closed) return await cancel("connection closed");
      }
      const next = reader.read();
      let r: ReadableStreamReadResult<Uint8Array> | typeof NOT_YET | typeof CLOSED = await Promise
        .race([next, NOT_YET_PROMISE]);
      if (r === NOT_YET) {
        // The stream needs time: send what is gathered meanwhile.
        flush();
        r = await Promise.race([next, closed]);
      }
      if (r === CLOSED || conn.closed) return await cancel("connection closed");
      const result = r as ReadableStreamReadResult<Uint8Array>;
      if (result.done) break;
      const chunk = result.value;
      if (!(chunk instanceof Uint8Array)) {
        throw new TypeError(`a response body chunk must be a Uint8Array, not ${typeof chunk}`);
      }
      frame(chunk);
    }
    if (framing === SIZED && sent < declared) {
      throw new Error(`the stream ended after ${sent} of its ${declared} bytes`);
    }
    if (framing === CHUNKED) ascii("0\r\n\r\n");
    flush();
    if (framing === CLOSE_DELIMITED) {
      conn.closeAfterFlush();
      return false;
    }
    return keep && !conn.closed;
  } catch (error) {
    responseCounters.streamErrors++;
    log.warn("response body stream failed after {sent} bytes: {error}", { sent, error });
    reader.cancel(error).catch(() => {});
    if (!conn.closed) {
      if (framing === CLOSE_DELIMITED) {
        conn.abort();
      } else {
        flush();
        conn.closeAfterFlush();
      }
    }
    return false;
  } finally {
    if (waiting.get(conn) === wake) waiting.delete(conn);
    buf = EMPTY;
    reactor.asyncSettled();
  }
}

const EMPTY = new Uint8Array(0);

// ---------------------------------------------------------------------------
// The public API (no usable internals, or not a Deno Response)

/**
 * The same response through the public API: `status`, `headers` (whose
 * iteration lowercases names and joins repeated ones, except Set-Cookie)
 * and the body stream. A body whose chunks are all there at once (a static
 * body's stream is one chunk; up to 64 KiB in several) gets a
 * `content-length`; a longer or slower one is streamed.
 */
function writePublic(
  conn: Connection,
  res: Response,
  target: ResponseTarget,
): boolean | Promise<boolean> {
  responseCounters.publicApi++;
  if (!loggedFallback && !useInternals) {
    loggedFallback = true;
    log.debug("writing Responses through the public API: {why}", {
      why: typeof FOUND === "string" ? FOUND : "internals turned off",
    });
  }
  if (res.bodyUsed) throw consumedError();
  if (res.type === "error") throw errorResponseError();
  const status = res.status;
  const list: [string, string][] = [];
  for (const pair of res.headers) list.push(pair);
  const body = res.body;
  if (body === null) return writeStatic(conn, target, status, list, false, null, null);
  if (bodiless(status)) {
    body.cancel().catch(() => {});
    return writeStatic(conn, target, status, list, false, null, null);
  }
  const reader = body.getReader();
  return peek(conn, target, status, list, reader);
}

async function peek(
  conn: Connection,
  target: ResponseTarget,
  status: number,
  list: [string, string][],
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<boolean> {
  const reactor = conn.reactor;
  reactor.asyncStarted();
  const chunks: Uint8Array[] = [];
  let total = 0;
  let ended = false;
  let error: unknown = null;
  let pending: Promise<ReadableStreamReadResult<Uint8Array>> | null = null;
  try {
    for (;;) {
      const next = reader.read();
      // The first chunk of a static body's stream takes a few microtasks:
      // give it one macrotask. Later ones must be there at once.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const r = chunks.length === 0
        ? await Promise.race([
          next,
          new Promise<typeof NOT_YET>((resolve) => (timer = setTimeout(resolve, 0, NOT_YET))),
        ])
        : await Promise.race([next, NOT_YET_PROMISE]);
      if (timer !== undefined) clearTimeout(timer);
      if (r === NOT_YET) {
        // Slower than at once: a stream. Hand the pending read on.
        pending = next;
        break;
      }
      const result = r as ReadableStreamReadResult<Uint8Array>;
      if (result.done) {
        ended = true;
        break;
      }
      if (!(result.value instanceof Uint8Array)) throw new TypeError("a chunk is not a Uint8Array");
      chunks.push(result.value);
      total += result.value.length;
      // (A static body's stream is one chunk, then done: let one chunk be large.)
      if (total > PEEK_BYTES && chunks.length > 1) break;
    }
  } catch (e) {
    error = e;
  } finally {
    reactor.asyncSettled();
  }
  if (error === null && ended) {
    const bytes = new Uint8Array(total);
    let offset = 0;
    for (const c of chunks) {
      bytes.set(c, offset);
      offset += c.length;
    }
    responseCounters.async++;
    return await writeStatic(conn, target, status, list, false, null, bytes);
  }
  // A stream (or an error: the stream below fails at once, in the usual way).
  const stream = new ReadableStream<Uint8Array>({
    pull: async (controller) => {
      if (error !== null) throw error;
      const read = pending ?? reader.read();
      pending = null;
      const r = await read;
      if (r.done) controller.close();
      else controller.enqueue(r.value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return await writeStream(conn, target, status, list, false, null, stream, -1, chunks);
}
