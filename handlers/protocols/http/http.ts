/**
 * HTTP/1.1 on a connection: the incremental parser feeds requests; the
 * responses to one read leave in one `send`. Responses are prebuilt byte
 * arrays; a lone one, or a run of identical ones (a pipelined batch), is sent
 * from where it lies, and only a mix is copied into a shared buffer first.
 *
 * Routes (TechEmpower style): `/` and `/plaintext` -> `Hello, World!`,
 * `/json` -> `{"message":"Hello, World!"}`, `/health` -> `OK`, anything
 * else 404. GET and HEAD; other methods get 405. Bad input gets its status
 * (400, 413, 431, 501, 505) with `Connection: close`, and the connection
 * closes once that response is flushed.
 *
 * Responses carry a cached `Date` header, rebuilt once a second by a reactor
 * timer: the prebuilt responses are dropped then and rebuilt on first use.
 *
 * @module
 */

import { getLogger } from "../../../log/mod.ts";
import type { Reactor } from "../../../reactor/reactor.ts";
import type { Timer } from "../../../reactor/timers.ts";
import type { Connection, Protocol, TimeoutKind } from "../../connection.ts";
import { PROMETHEUS_TEXT_TYPE, type ProtocolDefinition } from "../definition.ts";
import {
  HttpParser,
  type HttpParserLimits,
  type HttpParserSink,
  METHOD_GET,
  METHOD_HEAD,
} from "./http_parser.ts";

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
  408: "Request Timeout",
  405: "Method Not Allowed",
  413: "Content Too Large",
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
const STATIC_BYTES = STATIC.map((r) => encoder.encode(r.path));

function sameBytes(a: Uint8Array, t: Uint8Array, len: number): boolean {
  if (a.length !== len) return false;
  for (let k = 0; k < len; k++) if (a[k] !== t[k]) return false;
  return true;
}

/** Whether this machine stores words little-endian (x86_64 and aarch64 do). */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Longest request remembered for `respondAgain` (wrk's is ~50 bytes). */
const MEMO_MAX = 256;

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
  #date = "";
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
  /** A DataView of the read buffer last seen, for word-wide comparisons. */
  #view: DataView | null = null;
  #viewOf: Uint8Array | null = null;
  #requests = 0;
  readonly #dynamic: { path: Uint8Array; reply: () => HttpReply }[];
  #dynamicHit = 0;
  #dateTimer: Timer;

  /** Sets the app up on `reactor` (its Date timer runs there). */
  constructor(reactor: Reactor, options: Partial<HttpOptions> = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.#reactor = reactor;
    this.#dynamic = Object.entries(options.routes ?? {}).map(([path, reply]) => ({
      path: encoder.encode(path),
      reply,
    }));
    this.#refreshDate();
    const tick = () => {
      this.#refreshDate();
      reactor.resetTimer(timer, 1000 - (Date.now() % 1000));
    };
    const timer = reactor.setTimer(1000 - (Date.now() % 1000), tick);
    this.#dateTimer = timer;
  }

  /** Stops the Date timer (the server stopped). */
  close(): void {
    this.#reactor.cancelTimer(this.#dateTimer);
  }

  /** Requests answered so far. */
  get requests(): number {
    return this.#requests;
  }

  #refreshDate(): void {
    const date = new Date().toUTCString();
    if (date === this.#date) return;
    this.#date = date;
    this.#cache = new Array(STATIC.length * VARIANTS * 2).fill(null);
    this.#cachePointers = new Array(STATIC.length * VARIANTS * 2).fill(null);
    this.#runs = new Array(STATIC.length * VARIANTS * 2).fill(null);
    this.#runPointers = new Array(STATIC.length * VARIANTS * 2).fill(null);
  }

  /** A DataView of `data`, kept while the same array (the reactor's read buffer) comes back. */
  viewOf(data: Uint8Array): DataView {
    if (data !== this.#viewOf || this.#view === null) {
      this.#view = new DataView(data.buffer, data.byteOffset, data.byteLength);
      this.#viewOf = data;
    }
    return this.#view;
  }

  #build(status: number, contentType: string, body: Uint8Array, variant: number, head: boolean) {
    const headers = `HTTP/1.1 ${status} ${REASONS[status] ?? "Unknown"}\r\n` +
      `Server: reactor\r\nDate: ${this.#date}\r\n` +
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

  /** Matches the parser's target against the routes; ignores a query string. */
  #route(p: HttpParser): number {
    const t = p.target;
    let len = p.targetLength;
    for (let i = 0; i < len; i++) {
      if (t[i] === 0x3f /* ? */) {
        len = i;
        break;
      }
    }
    let route = ROUTE_NOT_FOUND;
    for (let r = 0; r < STATIC_BYTES.length; r++) {
      if (sameBytes(STATIC_BYTES[r], t, len)) {
        route = r;
        break;
      }
    }
    if (route === ROUTE_NOT_FOUND) {
      for (let d = 0; d < this.#dynamic.length; d++) {
        if (sameBytes(this.#dynamic[d].path, t, len)) {
          route = ROUTE_DYNAMIC;
          this.#dynamicHit = d;
          break;
        }
      }
    }
    if (route !== ROUTE_NOT_FOUND && p.method !== METHOD_GET && p.method !== METHOD_HEAD) {
      return ROUTE_NOT_ALLOWED;
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
      const status = route === ROUTE_NOT_FOUND ? 404 : 405;
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

  /** Appends an error response (with Connection: close). */
  respondError(conn: Connection, status: number): void {
    this.#requests++;
    const body = encoder.encode(REASONS[status] ?? "Error");
    this.append(conn, this.#build(status, "text/plain", body, CLOSE, false), null, -1);
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
  /** The bytes of the last simple request, to recognise it when it comes again. */
  #memo: Uint8Array | null = null;
  /** The same bytes as 32-bit words in this machine's byte order. */
  #memoWords: Int32Array | null = null;
  #memoLength = 0;
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
      const len = this.#memoLength;
      if (len > 0 && parser.idle && end - i >= len && !this.#draining && this.#matches(data, i)) {
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
      if (this.#answered === -2) break; // no request completed: all input taken, or an error
      if (wasIdle && this.#answered >= 0 && i - from <= MEMO_MAX) this.#remember(data, from, i);
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

  /** Whether data[at...] starts with the remembered request: four bytes per step. */
  #matches(data: Uint8Array, at: number): boolean {
    const view = this.#app.viewOf(data);
    const words = this.#memoWords!;
    const len = this.#memoLength;
    const whole = len >> 2;
    for (let k = 0; k < whole; k++) {
      if (view.getInt32(at + (k << 2), LITTLE_ENDIAN) !== words[k]) return false;
    }
    const memo = this.#memo!;
    for (let k = whole << 2; k < len; k++) if (data[at + k] !== memo[k]) return false;
    return true;
  }

  #remember(data: Uint8Array, from: number, to: number): void {
    if (this.#memo === null) {
      this.#memo = new Uint8Array(MEMO_MAX);
      this.#memoWords = new Int32Array(this.#memo.buffer);
    }
    // A byte loop, not set(subarray()): no view allocated per request.
    const memo = this.#memo;
    for (let k = from; k < to; k++) memo[k - from] = data[k];
    this.#memoLength = to - from;
    this.#memoKey = this.#answered;
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
    log.debug("fd {fd}: {status} {reason}", { fd: this.#conn.fd, status, reason });
    this.#app.respondError(this.#conn, status);
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
      log.info("fd {fd}: request not complete in time: 408", { fd: conn.fd });
      this.#app.respondError(conn, 408);
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
