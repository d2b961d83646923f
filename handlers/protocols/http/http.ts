/**
 * HTTP/1.1 on a connection: the incremental parser feeds requests; the
 * responses to one read leave in one `send`. Responses are prebuilt byte
 * arrays; a lone one, or a run of identical ones (a pipelined batch), is sent
 * from where it lies, and only a mix is copied into a shared buffer first.
 *
 * Routes (TechEmpower style): `/` and `/plaintext` -> `Hello, World!`,
 * `/json` -> `{"message":"Hello, World!"}`, `/health` -> `OK`, anything
 * else 404; matched on the path, also of an absolute-form target
 * (`GET http://host/json`). GET and HEAD; another method the parser knows
 * (POST, PUT, DELETE, OPTIONS, PATCH) gets 405 with `Allow: GET, HEAD`, any
 * other method 501 (RFC 9110 §9.1, §15.5.6, §15.6.2). Bad input gets its
 * status (400, 413, 414, 431, 501, 505) with `Connection: close`, and the
 * connection closes once that response is flushed. An answer to HEAD, error
 * or not, has no body; its Content-Length is the one the same request as GET
 * would get (RFC 9110 §8.6 allows no other value).
 *
 * A request that sends `Expect: 100-continue` and announces a body is
 * answered as soon as its head is complete (the routes never need a body),
 * with `Connection: close`: whether the client then sends the body is its
 * choice, so the connection cannot be reused (RFC 9110 §10.1.1).
 *
 * Errors caused by clients (bad requests, request timeouts) are logged at
 * most once a second per status, with the number of lines left out.
 *
 * Responses carry a cached `Date` header, rebuilt once a second by a reactor
 * timer: the prebuilt responses are dropped then and rebuilt on first use.
 *
 * @module
 */

import { getLogger } from "../../../log/mod.ts";
import type { Reactor } from "../../../reactor/reactor.ts";
import type { Connection, Protocol, TimeoutKind } from "../../connection.ts";
import { PROMETHEUS_TEXT_TYPE, type ProtocolDefinition } from "../definition.ts";
import {
  HttpParser,
  type HttpParserLimits,
  type HttpParserSink,
  METHOD_GET,
  METHOD_HEAD,
  METHOD_OTHER,
} from "./http_parser.ts";
import { DateClock } from "./date_clock.ts";
import { DEFAULT_MAX_MESSAGE, MAX_MAX_MESSAGE, MIN_MAX_MESSAGE } from "./websocket/mod.ts";
import { MEMO_MAX, RequestMemo } from "./request_memo.ts";

const log = getLogger(["reactor", "http"]);
const encoder = new TextEncoder();

/** HTTP app settings. */
export interface HttpOptions {
  /** Largest request body (413 above). Default 1 MiB. */
  maxBody: number;
  /** Largest request header section (431 above). Default 16 KiB. */
  maxHeaderBytes: number;
  /** Extra routes: path -> handler returning a status, content type and body. */
  routes?: Record<string, () => HttpReply>;
}

/** A dynamic route's answer. */
export interface HttpReply {
  /** The status code, e.g. 200. */
  status: number;
  /** The Content-Type header's value. */
  contentType: string;
  /** The body (a string is sent as UTF-8). */
  body: string | Uint8Array;
}

const DEFAULTS: HttpOptions = { maxBody: 1 << 20, maxHeaderBytes: 16 << 10 };

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  414: "URI Too Long",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  505: "HTTP Version Not Supported",
};

/** Static routes, matched by their bytes. Index = route id. */
const STATIC: { path: string; contentType: string; body: string }[] = [
  { path: "/plaintext", contentType: "text/plain", body: "Hello, World!" },
  { path: "/", contentType: "text/plain", body: "Hello, World!" },
  { path: "/json", contentType: "application/json", body: '{"message":"Hello, World!"}' },
  { path: "/health", contentType: "text/plain", body: "OK" },
];
const ROUTE_NOT_FOUND = STATIC.length;
const ROUTE_NOT_ALLOWED = STATIC.length + 1;
const ROUTE_DYNAMIC = STATIC.length + 2;
const ROUTE_NOT_IMPLEMENTED = STATIC.length + 3;
const STATIC_BYTES = STATIC.map((r) => encoder.encode(r.path));
const ROOT = encoder.encode("/");

/** Whether t[from, from + len) is exactly `a`. */
function sameBytes(a: Uint8Array, t: Uint8Array, from: number, len: number): boolean {
  if (a.length !== len) return false;
  for (let k = 0; k < len; k++) if (a[k] !== t[from + k]) return false;
  return true;
}

/**
 * Where the path starts in an absolute-form target `http://authority/path` or
 * `https://...` (scheme in any case, RFC 9112 §3.2.2): the index of the "/",
 * "?" or end after the authority. 0 for anything else (origin-form, "*", other
 * schemes), which then matches no route unless it is a path.
 */
function absolutePathStart(t: Uint8Array, len: number): number {
  // "http" in any case, then an optional "s", then "://".
  if (len < 7 || (t[0] | 0x20) !== 0x68 || (t[1] | 0x20) !== 0x74) return 0;
  if ((t[2] | 0x20) !== 0x74 || (t[3] | 0x20) !== 0x70) return 0;
  let k = (t[4] | 0x20) === 0x73 ? 5 : 4;
  if (k + 3 > len || t[k] !== 0x3a || t[k + 1] !== 0x2f || t[k + 2] !== 0x2f) return 0;
  k += 3;
  while (k < len && t[k] !== 0x2f && t[k] !== 0x3f) k++;
  return k;
}

/** Client error kinds logged at info (the rest at debug). */
const INFO_STATUSES = new Set([408]);

/**
 * Log lines about clients' errors (a bad request, a request timeout): at most
 * one a second per status, so a flood of bad clients costs one line a second
 * each. Lines left out are counted and reported with the next line of that
 * status, or by `flush` (once a second) when none comes.
 */
class ClientErrorLog {
  /** reactor.now of the last line, per status. */
  readonly #last = new Map<number, number>();
  /** Lines left out since the last line, per status. */
  readonly #suppressed = new Map<number, number>();

  /** A client got `status` (for `reason`) on fd: logs it unless that status was logged < 1 s ago. */
  report(now: number, fd: number, status: number, reason: string): void {
    const last = this.#last.get(status);
    if (last !== undefined && now - last < 1000) {
      this.#suppressed.set(status, (this.#suppressed.get(status) ?? 0) + 1);
      return;
    }
    const suppressed = this.#suppressed.get(status) ?? 0;
    this.#suppressed.delete(status);
    this.#last.set(status, now);
    const props = { fd, status, reason, suppressed };
    const message = suppressed === 0
      ? "fd {fd}: {status} {reason}"
      : "fd {fd}: {status} {reason} ({suppressed} more {status} not logged)";
    if (INFO_STATUSES.has(status)) log.info(message, props);
    else log.debug(message, props);
  }

  /**
   * Reports the counts of lines left out whose status has not been logged for
   * a second; `final`: all of them (the server stops, nothing else would).
   */
  flush(now: number, final = false): void {
    for (const [status, suppressed] of this.#suppressed) {
      if (!final && now - (this.#last.get(status) ?? 0) < 1000) continue;
      this.#suppressed.delete(status);
      this.#last.set(status, now);
      const props = { status, suppressed };
      const message = "{suppressed} more {status} not logged";
      if (INFO_STATUSES.has(status)) log.info(message, props);
      else log.debug(message, props);
    }
  }
}

/**
 * Identical responses in a row sent straight from a prebuilt run of copies
 * (TechEmpower pipelines 16); longer runs are copied this many at a time.
 */
const RUN_MAX = 64;

/** Response variants: connection handling x method. */
const KEEP_ALIVE_11 = 0; // HTTP/1.1 keep-alive: no Connection header needed
const KEEP_ALIVE_10 = 1; // HTTP/1.0 that asked for keep-alive
const CLOSE = 2;
const VARIANTS = 3;

const CONNECTION_HEADER = ["", "Connection: keep-alive\r\n", "Connection: close\r\n"];

/**
 * Per-reactor HTTP state: the response cache, the shared response buffer,
 * the Date timer. One per server; `protocol()` makes the per-connection part.
 */
export class HttpApp {
  /** The settings in force (defaults filled in). */
  readonly options: HttpOptions;
  readonly #reactor: Reactor;
  /** [route][variant][head?] prebuilt for the current Date; null = rebuild on use. */
  #cache: (Uint8Array | null)[] = [];
  /** The address of each cached response, taken once when it is built. */
  #cachePointers: (Deno.PointerObject | null)[] = [];
  /** Where responses to one read are assembled before one send. */
  #out = new Uint8Array(64 << 10);
  #outPointer = Deno.UnsafePointer.of(this.#out)!;
  #outLen = 0;
  /**
   * The last responses to this read, not copied yet: `#runCount` times the
   * same cached response (`#runKey`, or -1 for one that is not cached). A
   * lone request is answered straight from the cached bytes; a pipelined
   * batch of identical requests straight from a prebuilt run of copies.
   */
  #runKey = -1;
  #runBytes: Uint8Array | null = null;
  #runPointer: Deno.PointerObject | null = null;
  #runCount = 0;
  /** [cache key] RUN_MAX copies of the cached response, built on first use. */
  #runs: (Uint8Array | null)[] = [];
  #runPointers: (Deno.PointerObject | null)[] = [];
  #requests = 0;
  readonly #dynamic: { path: Uint8Array; reply: () => HttpReply }[];
  #dynamicHit = 0;
  #clock: DateClock;
  readonly #clientErrors = new ClientErrorLog();

  /** Sets the app up on `reactor` (its Date timer runs there). */
  constructor(reactor: Reactor, options: Partial<HttpOptions> = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.#reactor = reactor;
    this.#dynamic = Object.entries(options.routes ?? {}).map(([path, reply]) => ({
      path: encoder.encode(path),
      reply,
    }));
    this.#dropPrebuilt();
    this.#clock = new DateClock(
      reactor,
      () => this.#dropPrebuilt(),
      () => this.#clientErrors.flush(reactor.now),
    );
  }

  /** Stops the Date timer (the server stopped). */
  close(): void {
    this.#clock.close();
    this.#clientErrors.flush(this.#reactor.now, true);
  }

  /** Requests answered so far. */
  get requests(): number {
    return this.#requests;
  }

  /** Logs a client's error (rate-limited: one line a second per status). */
  clientError(fd: number, status: number, reason: string): void {
    this.#clientErrors.report(this.#reactor.now, fd, status, reason);
  }

  /** The Date changed: the prebuilt responses carry the old one. */
  #dropPrebuilt(): void {
    this.#cache = new Array(STATIC.length * VARIANTS * 2).fill(null);
    this.#cachePointers = new Array(STATIC.length * VARIANTS * 2).fill(null);
    this.#runs = new Array(STATIC.length * VARIANTS * 2).fill(null);
    this.#runPointers = new Array(STATIC.length * VARIANTS * 2).fill(null);
  }

  #build(status: number, contentType: string, body: Uint8Array, variant: number, head: boolean) {
    const headers = `HTTP/1.1 ${status} ${REASONS[status] ?? "Unknown"}\r\n` +
      `Server: reactor\r\nDate: ${this.#clock.value}\r\n` +
      `Content-Type: ${contentType}\r\nContent-Length: ${body.length}\r\n` +
      (status === 405 ? "Allow: GET, HEAD\r\n" : "") +
      CONNECTION_HEADER[variant] + "\r\n";
    const h = encoder.encode(headers);
    if (head || body.length === 0) return h;
    const out = new Uint8Array(h.length + body.length);
    out.set(h);
    out.set(body, h.length);
    return out;
  }

  #staticKey(route: number, variant: number, head: boolean): number {
    const key = (route * VARIANTS + variant) * 2 + (head ? 1 : 0);
    if (this.#cache[key] === null) {
      const s = STATIC[route];
      const r = this.#build(200, s.contentType, encoder.encode(s.body), variant, head);
      this.#cache[key] = r;
      this.#cachePointers[key] = Deno.UnsafePointer.of(r);
    }
    return key;
  }

  /**
   * Matches the parser's target against the routes: its path, without a query
   * string; for an absolute-form target, the path after the authority.
   */
  #route(p: HttpParser): number {
    let t = p.target;
    let end = p.targetLength;
    let from = 0;
    if (end > 0 && t[0] !== 0x2f /* / */) {
      from = absolutePathStart(t, end);
      if (from === end || t[from] === 0x3f) {
        // An empty path is "/" (RFC 9110 §4.2.3).
        t = ROOT;
        from = 0;
        end = 1;
      }
    }
    for (let i = from; i < end; i++) {
      if (t[i] === 0x3f /* ? */) {
        end = i;
        break;
      }
    }
    const len = end - from;
    let route = ROUTE_NOT_FOUND;
    for (let r = 0; r < STATIC_BYTES.length; r++) {
      if (sameBytes(STATIC_BYTES[r], t, from, len)) {
        route = r;
        break;
      }
    }
    if (route === ROUTE_NOT_FOUND) {
      for (let d = 0; d < this.#dynamic.length; d++) {
        if (sameBytes(this.#dynamic[d].path, t, from, len)) {
          route = ROUTE_DYNAMIC;
          this.#dynamicHit = d;
          break;
        }
      }
    }
    if (p.method !== METHOD_GET && p.method !== METHOD_HEAD) {
      // A method no route here implements is 501, whatever the path; one the server
      // knows but the route does not allow is 405 (with Allow).
      if (p.method === METHOD_OTHER) return ROUTE_NOT_IMPLEMENTED;
      if (route !== ROUTE_NOT_FOUND) return ROUTE_NOT_ALLOWED;
    }
    return route;
  }

  /**
   * Appends the response to `p`'s request to the shared buffer; flushes if
   * full. `close` forces `Connection: close` (graceful shutdown). Returns a
   * key for `respondAgain` when the answer is a static route's, else -1.
   */
  respond(conn: Connection, p: HttpParser, close: boolean): number {
    this.#requests++;
    const variant = close || !p.keepAlive
      ? CLOSE
      : p.versionMinor === 0
      ? KEEP_ALIVE_10
      : KEEP_ALIVE_11;
    const head = p.method === METHOD_HEAD;
    const route = this.#route(p);
    let r: Uint8Array;
    if (route < ROUTE_NOT_FOUND) {
      const key = this.#staticKey(route, variant, head);
      this.append(conn, this.#cache[key]!, this.#cachePointers[key], key);
      return (route << 3) | (variant << 1) | (head ? 1 : 0);
    } else if (route === ROUTE_DYNAMIC) {
      const reply = this.#dynamic[this.#dynamicHit].reply();
      const body = typeof reply.body === "string" ? encoder.encode(reply.body) : reply.body;
      r = this.#build(reply.status, reply.contentType, body, variant, head);
    } else {
      const status = route === ROUTE_NOT_FOUND ? 404 : route === ROUTE_NOT_ALLOWED ? 405 : 501;
      r = this.#build(status, "text/plain", encoder.encode(REASONS[status]), variant, head);
    }
    this.append(conn, r, null, -1);
    return -1;
  }

  /** Answers again a static request that `respond` answered (its return value). */
  respondAgain(conn: Connection, packed: number): void {
    this.#requests++;
    const key = this.#staticKey(packed >> 3, (packed >> 1) & 3, (packed & 1) === 1);
    this.append(conn, this.#cache[key]!, this.#cachePointers[key], key);
  }

  /**
   * Appends an error response (with Connection: close). `head`: the request
   * was HEAD, so the response has no body; its Content-Length still states
   * the body's length, as for any answer to HEAD.
   */
  respondError(conn: Connection, status: number, head = false): void {
    this.#requests++;
    const body = encoder.encode(REASONS[status] ?? "Error");
    this.append(conn, this.#build(status, "text/plain", body, CLOSE, head), null, -1);
  }

  /**
   * Adds a response to this read's answer. Nothing is copied while the
   * answer is one run of the same cached response (`key` >= 0); a different
   * response copies the run into the shared buffer, which is sent first if
   * it fills up.
   */
  append(
    conn: Connection,
    bytes: Uint8Array,
    pointer: Deno.PointerObject | null,
    key: number,
  ): void {
    if (this.#runCount > 0) {
      if (key >= 0 && key === this.#runKey && this.#runCount < RUN_MAX) {
        this.#runCount++;
        return;
      }
      this.#spillRun(conn);
    }
    this.#runKey = key;
    this.#runBytes = bytes;
    this.#runPointer = pointer;
    this.#runCount = 1;
  }

  /** Copies the pending run into the shared buffer. */
  #spillRun(conn: Connection): void {
    const count = this.#runCount;
    const bytes = this.#runBytes!;
    const key = this.#runKey;
    this.#runCount = 0;
    this.#runBytes = null;
    this.#runPointer = null;
    if (count === RUN_MAX) {
      this.#copy(conn, this.#runBuffer(key));
    } else {
      for (let c = 0; c < count; c++) this.#copy(conn, bytes);
    }
  }

  /** RUN_MAX copies of cached response `key`, end to end. */
  #runBuffer(key: number): Uint8Array {
    let run = this.#runs[key];
    if (run === null) {
      const r = this.#cache[key]!;
      run = new Uint8Array(r.length * RUN_MAX);
      for (let c = 0; c < RUN_MAX; c++) run.set(r, c * r.length);
      this.#runs[key] = run;
      this.#runPointers[key] = Deno.UnsafePointer.of(run);
    }
    return run;
  }

  #copy(conn: Connection, bytes: Uint8Array): void {
    if (this.#outLen + bytes.length > this.#out.length) {
      this.flush(conn);
      if (bytes.length > this.#out.length) {
        conn.write(bytes);
        return;
      }
    }
    this.#out.set(bytes, this.#outLen);
    this.#outLen += bytes.length;
  }

  /** Sends this read's responses: all of them in one `send`. */
  flush(conn: Connection): void {
    const count = this.#runCount;
    if (count > 0) {
      if (this.#outLen > 0) {
        this.#spillRun(conn);
      } else {
        // The whole answer is one run: send it from where it already lies.
        const bytes = this.#runBytes!;
        const pointer = this.#runPointer;
        const key = this.#runKey;
        this.#runCount = 0;
        this.#runBytes = null;
        this.#runPointer = null;
        if (count === 1) {
          if (pointer !== null) conn.writeFrom(pointer, bytes, bytes.length);
          else conn.write(bytes);
        } else {
          const run = this.#runBuffer(key);
          conn.writeFrom(this.#runPointers[key]!, run, count * bytes.length);
        }
        return;
      }
    }
    if (this.#outLen === 0) return;
    const n = this.#outLen;
    this.#outLen = 0;
    conn.writeFrom(this.#outPointer, this.#out, n);
  }

  /** Makes the protocol object for a new connection. */
  protocol(conn: Connection): Protocol {
    return new HttpConnection(this, conn);
  }
}

/** One connection's HTTP state: its parser, and whether to close after this read. */
class HttpConnection implements Protocol, HttpParserSink {
  readonly #app: HttpApp;
  readonly #conn: Connection;
  readonly #parser: HttpParser;
  /** Stop parsing; close once the answers are flushed. */
  #closing = false;
  /** Graceful shutdown: answer the request in flight with Connection: close. */
  #draining = false;
  /** reactor.now when the request in progress began; -1 between requests. */
  #requestStart = -1;
  #answeredInRead = false;
  readonly #memo = new RequestMemo();
  #memoKey = -1;
  /** The peer sent FIN. */
  #peerEnded = false;
  /** Unparsed bytes of a read cut short at high water. */
  #stash: Uint8Array | null = null;
  /** What the request just parsed was answered with: a respondAgain key, -1, or -2 (none yet). */
  #answered = -2;

  constructor(app: HttpApp, conn: Connection) {
    this.#app = app;
    this.#conn = conn;
    const limits: HttpParserLimits = {
      maxBody: app.options.maxBody,
      maxHeaderBytes: app.options.maxHeaderBytes,
    };
    this.#parser = new HttpParser(this, limits);
  }

  data(conn: Connection, data: Uint8Array, start: number, end: number): void {
    if (this.#closing) return;
    const parser = this.#parser;
    if (parser.idle) this.#requestStart = conn.reactor.now;
    this.#answeredInRead = false;
    let i = start;
    while (i < end && !this.#closing) {
      if (conn.outputFull) {
        // The peer is not reading its answers: stop parsing (the connection
        // has stopped reading too) and keep the rest of this read until the
        // output falls to low water (lowWater). A client that pipelines and
        // never reads costs at most one read and the high-water mark.
        this.#stash = data.slice(i, end);
        break;
      }
      const len = this.#memo.length;
      if (
        len > 0 && parser.idle && !this.#draining && this.#memo.matches(data, i, end)
      ) {
        // The same bytes as the last simple request, from the same (idle)
        // state: the same request. Answer it without parsing it again.
        this.#app.respondAgain(conn, this.#memoKey);
        this.#answeredInRead = true;
        i += len;
        continue;
      }
      const from = i;
      const wasIdle = parser.idle;
      this.#answered = -2;
      i = parser.execute(data, i, end);
      if (this.#answered === -2) {
        // No request completed: all input taken, or an error. A complete head that
        // expects 100-continue waits for an answer before its body comes: give the
        // final one now.
        if (parser.expectContinue && !parser.idle && !this.#closing) this.#answerEarly(conn);
        break;
      }
      if (wasIdle && this.#answered >= 0 && i - from <= MEMO_MAX) {
        this.#memo.remember(data, from, i);
        this.#memoKey = this.#answered;
      }
    }
    this.#app.flush(conn);
    if (this.#closing) {
      conn.closeAfterFlush();
    } else if (parser.idle) {
      this.#requestStart = -1;
    } else {
      // A request is left incomplete: the request (slowloris) timeout runs
      // from its first byte, which came in this read if another was answered.
      if (this.#answeredInRead) this.#requestStart = conn.reactor.now;
      const t = conn.timeouts;
      if (t !== null && t.requestMs > 0) conn.pullTimer(this.#requestStart + t.requestMs);
    }
  }

  /** The output fell to low water: answer what was kept, then read again. */
  lowWater(conn: Connection): void {
    const stash = this.#stash;
    if (stash !== null) {
      this.#stash = null;
      this.data(conn, stash, 0, stash.length);
      if (conn.closed || this.#stash !== null) return; // full again: wait for the next lowWater
      if (this.#peerEnded) {
        conn.closeAfterFlush();
        return;
      }
    }
    conn.resumeReading();
  }

  /**
   * Answers the request whose head is complete and whose body has not all come
   * (it expects 100-continue). The client may or may not send the body now, so
   * the connection ends after this answer (the lingering close reads and drops
   * a body that comes anyway).
   */
  #answerEarly(conn: Connection): void {
    this.#answeredInRead = true;
    this.#app.respond(conn, this.#parser, true);
    this.#closing = true;
  }

  onRequest(p: HttpParser): boolean {
    this.#answeredInRead = true;
    const key = this.#app.respond(this.#conn, p, this.#draining);
    // Only a plain keep-alive GET/HEAD without a body can be answered again
    // from its bytes alone.
    this.#answered = p.keepAlive && p.contentLength <= 0 && !p.chunked &&
        (p.method === METHOD_GET || p.method === METHOD_HEAD)
      ? key
      : -1;
    if (!p.keepAlive || this.#draining) {
      this.#closing = true;
      return false;
    }
    // One request per execute(), so data() can try the memo before the next.
    return false;
  }

  onError(status: number, reason: string): void {
    this.#app.clientError(this.#conn.fd, status, reason);
    // The parser's method is the failed request's, or METHOD_OTHER if it failed before it.
    this.#app.respondError(this.#conn, status, this.#parser.method === METHOD_HEAD);
    this.#closing = true;
  }

  end(conn: Connection): void {
    // The peer finished sending: answer what was complete, then close (after
    // the requests kept at high water, if any: lowWater comes back here).
    this.#peerEnded = true;
    if (this.#stash === null) conn.closeAfterFlush();
  }

  requestStartedAt(): number {
    return this.#requestStart;
  }

  shutdown(conn: Connection): void {
    this.#draining = true;
    // Between requests: nothing is in flight, so close (after any flush).
    // Mid-request: the answer to it will carry Connection: close.
    if (this.#parser.idle) {
      this.#closing = true;
      conn.closeAfterFlush();
    }
  }

  timedOut(conn: Connection, what: TimeoutKind): void {
    if (what === "request" && !this.#closing) {
      this.#app.clientError(conn.fd, 408, "request not complete in time");
      this.#app.respondError(conn, 408, this.#parser.method === METHOD_HEAD);
      this.#app.flush(conn);
      this.#closing = true;
      conn.closeAfterFlush();
      return;
    }
    conn.close("timeout");
  }
}

/** `--app http`: the built-in HTTP/1.1 app (TechEmpower routes, /health, /metrics). */
export const http: ProtocolDefinition = {
  name: "http",
  summary: "HTTP/1.1: /, /plaintext, /json, /health, /metrics",
  flags: [
    {
      name: "max-body",
      key: "maxBody",
      kind: "integer",
      help: "largest HTTP request body in bytes, 413 above",
      default: DEFAULTS.maxBody,
      min: 0,
      max: 2 ** 40,
    },
    {
      name: "max-header-bytes",
      key: "maxHeaderBytes",
      kind: "integer",
      help: "largest HTTP header section in bytes, 431 above",
      default: DEFAULTS.maxHeaderBytes,
      min: 256,
      max: 1 << 24,
    },
    {
      name: "max-ws-message",
      key: "maxWebSocketMessage",
      kind: "integer",
      help: "with --module: largest WebSocket message in bytes, close 1009 above",
      default: DEFAULT_MAX_MESSAGE,
      min: MIN_MAX_MESSAGE,
      max: MAX_MAX_MESSAGE,
    },
  ],
  create(setup, options) {
    const metricsRoute = () => ({
      status: 200,
      contentType: PROMETHEUS_TEXT_TYPE,
      body: setup.metricsText(),
    });
    const routes = options.routes as HttpOptions["routes"];
    const app = new HttpApp(setup.context.reactor, {
      ...(options as Partial<HttpOptions>),
      routes: { "/metrics": metricsRoute, ...routes },
    });
    return {
      connect: (conn) => app.protocol(conn),
      metrics: () => [{
        name: "requests_total",
        type: "counter",
        help: "HTTP requests answered.",
        value: app.requests,
      }],
      stop: () => app.close(),
    };
  },
};
