/**
 * A fetch handler on the reactor: each HTTP/1.1 request becomes a web
 * `Request` (built lazily: see request.ts), goes to the user's
 * `(request, info) => Response | Promise<Response>`, and the `Response` is
 * written back (response.ts). The same contract as `Deno.serve`.
 *
 * - Order: requests on one connection may be pipelined and their handlers
 *   run concurrently, but answers leave in request order. Each request is an
 *   `Exchange` in the connection's queue; the head of the queue is written
 *   as soon as it is settled, then the next.
 * - Bodies: request bodies stream into the request as the parser delivers
 *   them, bounded by `maxBody` (413) and paused at 64 KiB unread (the
 *   connection stops reading until the handler takes them). Response bodies:
 *   response.ts (streams pulled only below the connection's high-water mark).
 * - Async: a handler that returns a promise is announced to the reactor
 *   (`asyncStarted`), which then lets microtasks run after each dispatch and
 *   never waits on the JS thread while any is in flight.
 * - Errors: a handler that throws or rejects is logged once; `onError`
 *   decides the response (default: 500). The server serves on.
 * - Static files: with `files` (a root directory), a GET or HEAD that names
 *   a file there is answered from it (static/static_files.ts) before any
 *   `Request` is built; what is not a file goes to the handler (or, with no
 *   handler, gets 404/405).
 * - Lifecycle: `request.signal` aborts when the client goes away before its
 *   response is complete; `info.completed` resolves when the response has
 *   been handed to the connection in full, and rejects if the client went
 *   away first.
 *
 * @module
 */

import { getLogger } from "../../../log/mod.ts";
import type { Reactor } from "../../../reactor/reactor.ts";
import { formatAddress, peerAddress } from "../../../syscalls/socket.ts";
import type { CloseReason, Connection, Protocol, TimeoutKind } from "../../connection.ts";
import { counter, type ProtocolDefinition, type ProtocolInstance } from "../definition.ts";
import { HttpParser, type HttpParserSink } from "./http_parser.ts";
import { AccessLog, type AccessLogFormat, type AccessRecord } from "./access_log.ts";
import { DateClock } from "./date_clock.ts";
import { BodySource, fieldValue, latin1, latin1Bytes, ServerRequest, UrlCache } from "./request.ts";
import { Fifo } from "./fifo.ts";
import { MEMO_MAX, RequestMemo } from "./request_memo.ts";
import { CONTINUE_100, reasonPhrase, responseConnectionClosed, writeResponse } from "./response.ts";
import {
  hasUpgradeField,
  holdDenoUpgrade,
  offerUpgrade,
  releaseDenoUpgrade,
  UpgradeTicket,
  WebSocketHandshakeError,
  webSocketMetrics,
  type WebSocketSettings,
  webSocketSettings,
} from "./websocket/mod.ts";
import {
  type StaticAnswer,
  StaticFiles,
  staticMetrics,
  type StaticOptions,
} from "./static/static_files.ts";

const log = getLogger(["reactor", "http", "app"]);

/** What a fetch handler gets besides the request (as `Deno.ServeHandlerInfo`). */
export interface FetchHandlerInfo {
  /** The client's address. */
  readonly remoteAddr: Deno.NetAddr;
  /** Resolves once the response has been sent in full; rejects if the client went away first. */
  readonly completed: Promise<void>;
}

/** A fetch handler, as `Deno.serve` takes it. */
export type FetchHandler = (
  request: Request,
  info: FetchHandlerInfo,
) => Response | Promise<Response>;

/** Settings of a fetch app. */
export interface FetchAppOptions {
  /** The handler (null: only static files, with `files`). */
  handler: FetchHandler | null;
  /** A directory whose files are served before the handler is asked. */
  files?: StaticOptions | null;
  /** Makes the response when the handler throws or rejects (default: 500). */
  onError?: (error: unknown) => Response | Promise<Response>;
  /**
   * Largest request body (413 above). Default: no limit beyond the parser's
   * 2^48, as Deno.serve (the CLI's `--max-body` sets 1 MiB).
   */
  maxBody?: number;
  /** Largest request header section (431 above). Default 16 KiB. */
  maxHeaderBytes?: number;
  /** `http://host:port` for requests without a Host field (HTTP/1.0). */
  origin: string;
  /** An access log line per request, in this format (default: none). */
  accessLog?: AccessLogFormat | null;
  /** Largest WebSocket message received, in bytes (1009 above). Default 16 MiB. */
  maxWebSocketMessage?: number;
}

/**
 * Deno defines the global `Response` as a getter (made on first use):
 * read once here, not on every `instanceof`.
 */
const ResponseClass: typeof Response = Response;

/** Bytes of one head arena (many requests' heads). */
const HEAD_ARENA = 64 << 10;
/** Field ints of one field arena. */
const FIELD_ARENA = 16 << 10;

const REFERER = latin1Bytes("referer");
const USER_AGENT = latin1Bytes("user-agent");

/** Requests one connection may have in flight (parsed, not yet answered) before it stops reading. */
const MAX_IN_FLIGHT = 32;

/**
 * One request and its response, in the connection's queue. It is also the
 * handler's `info`: `completed` is a promise made only if asked for.
 */
class Exchange implements FetchHandlerInfo {
  readonly request: ServerRequest;
  readonly body: BodySource | null;
  readonly #conn: FetchConnection;
  readonly head: boolean;
  readonly http10: boolean;
  keepAlive: boolean;
  response: Response | null = null;
  settled = false;
  /** The request may become a WebSocket (a GET with an Upgrade field), or null. */
  upgrade: UpgradeTicket | null = null;
  /** The request asked for `100 Continue`. */
  expectContinue = false;
  /** A static file's answer, written instead of `response` (then settled from the start). */
  staticAnswer: StaticAnswer | null = null;
  /** For the access log of a queued static answer: what the request and answer were. */
  staticLog: AccessRecord | null = null;
  /** The target as sent and when the head arrived (for the access log). */
  target = "";
  startedAt = 0;
  /** 0 pending, 1 sent in full, 2 the client went away first. */
  #outcome = 0;
  #error: unknown = null;
  #completed: Promise<void> | null = null;
  #resolve: (() => void) | null = null;
  #reject: ((e: unknown) => void) | null = null;

  constructor(
    conn: FetchConnection,
    request: ServerRequest,
    body: BodySource | null,
    head: boolean,
    http10: boolean,
    keepAlive: boolean,
  ) {
    this.#conn = conn;
    this.request = request;
    this.body = body;
    this.head = head;
    this.http10 = http10;
    this.keepAlive = keepAlive;
  }

  get remoteAddr(): Deno.NetAddr {
    return this.#conn.remoteAddr;
  }

  get completed(): Promise<void> {
    if (this.#completed !== null) return this.#completed;
    if (this.#outcome === 1) return this.#completed = Promise.resolve();
    this.#completed = this.#outcome === 2
      ? Promise.reject(this.#error)
      : new Promise<void>((resolve, reject) => {
        this.#resolve = resolve;
        this.#reject = reject;
      });
    this.#completed.catch(() => {}); // a rejection nobody awaits is not an error
    return this.#completed;
  }

  /** The response was handed to the connection in full. */
  sent(): void {
    if (this.#outcome !== 0) return;
    this.#outcome = 1;
    this.#resolve?.();
  }

  /** The client went away first. */
  lost(error: unknown): void {
    if (this.#outcome !== 0) return;
    this.#outcome = 2;
    this.#error = error;
    this.#reject?.(error);
  }
}

/** Whether `ex` asked for 100 Continue, was never sent it, and its body is not all here. */
function unsentContinue(ex: Exchange): boolean {
  return ex.expectContinue && ex.body !== null && !ex.body.read && !ex.body.complete;
}

/** The per-server part of a fetch app: options, the Date header, counters. */
export class FetchApp {
  readonly options:
    & Required<Omit<FetchAppOptions, "onError" | "accessLog" | "files" | "maxWebSocketMessage">>
    & Pick<FetchAppOptions, "onError">;
  /** What this app's WebSockets share: the message limit, the counters. */
  readonly websockets: WebSocketSettings;
  /** The static root, or null. */
  readonly files: StaticFiles | null;
  /** The access log, or null when off. */
  readonly accessLog: AccessLog | null;
  readonly reactor: Reactor;
  /** The Date header's value, kept current. */
  readonly clock: DateClock;
  /**
   * Where requests' heads and fields are copied: arenas shared by every
   * request of this app, renewed when full (the old one lives on while
   * requests point into it). A fresh typed array per request costs ~2 µs
   * here (the backing store and the GC it brings); a copy into an arena ~30 ns.
   */
  arenaHead: Uint8Array = new Uint8Array(HEAD_ARENA);
  arenaFields: Int32Array = new Int32Array(FIELD_ARENA);
  /** Where the last copied request's head and fields start in the arenas. */
  arenaHeadBase = 0;
  arenaFieldBase = 0;
  /**
   * Counts arena renewals: a copy made in generation g stays valid (arenas
   * are never written twice) and reachable from here while it is still g.
   */
  arenaGeneration = 0;
  #headUsed = 0;
  #fieldsUsed = 0;
  /** Requests answered. */
  requests = 0;
  /** Requests taken without a parse: the same bytes as their connection's last (request_memo.ts). */
  repeats = 0;
  /** Handler exceptions and rejections. */
  errors = 0;

  constructor(reactor: Reactor, options: FetchAppOptions) {
    this.reactor = reactor;
    this.options = {
      maxBody: 2 ** 48,
      maxHeaderBytes: 16 << 10,
      ...options,
    };
    this.accessLog = options.accessLog ? new AccessLog(reactor, options.accessLog) : null;
    this.files = options.files ? new StaticFiles(options.files) : null;
    this.clock = new DateClock(reactor);
    this.websockets = webSocketSettings(options.maxWebSocketMessage);
    holdDenoUpgrade(); // Deno.upgradeWebSocket works on our requests while we run
  }

  /**
   * Copies the parser's head bytes and fields (offsets moved to the copy)
   * into the arenas; `arenaHead`, `arenaFields`, `arenaHeadBase` and
   * `arenaFieldBase` then describe the copy.
   */
  copyHead(p: HttpParser): void {
    const count = p.fieldCount;
    const src = p.headBytes;
    const fields = p.fields;
    const used = count === 0 ? 0 : fields[count * 4 - 1];
    if (this.#headUsed + used > this.arenaHead.length) {
      this.arenaHead = new Uint8Array(Math.max(HEAD_ARENA, used));
      this.#headUsed = 0;
      this.arenaGeneration++;
    }
    if (this.#fieldsUsed + count * 4 > this.arenaFields.length) {
      this.arenaFields = new Int32Array(Math.max(FIELD_ARENA, count * 4));
      this.#fieldsUsed = 0;
      this.arenaGeneration++;
    }
    const head = this.arenaHead;
    const base = this.#headUsed;
    for (let k = 0; k < used; k++) head[base + k] = src[k];
    this.#headUsed = base + used;
    const out = this.arenaFields;
    const fbase = this.#fieldsUsed;
    for (let k = 0; k < count * 4; k++) out[fbase + k] = fields[k] + base;
    this.#fieldsUsed = fbase + count * 4;
    this.arenaHeadBase = base;
    this.arenaFieldBase = fbase;
  }

  /** The protocol object for a new connection. */
  connect(conn: Connection): Protocol {
    return new FetchConnection(this, conn);
  }

  /** Stops the Date timer, closes the static root. */
  close(): void {
    releaseDenoUpgrade();
    this.clock.close();
    this.files?.close();
    this.accessLog?.flush();
  }

  /** The response for a handler that threw `error`: onError's, else a 500. */
  errorResponse(error: unknown): Response | Promise<Response> {
    if (error instanceof WebSocketHandshakeError && !this.options.onError) {
      log.debug("WebSocket handshake refused: {error}", { error: error.message });
      return error.response(); // a bad handshake is the client's error: 400 (426)
    }
    this.errors++;
    log.error("handler threw: {error}", { error });
    const onError = this.options.onError;
    if (onError) {
      try {
        return onError(error);
      } catch (again) {
        log.error("onError threw too: {error}", { error: again });
      }
    }
    return new Response("Internal Server Error", { status: 500 });
  }
}

/** One connection's HTTP state: its parser and its queue of exchanges. */
class FetchConnection implements Protocol, HttpParserSink {
  readonly #app: FetchApp;
  readonly #conn: Connection;
  readonly #parser: HttpParser;
  /** Exchanges in request order; the head is the one being answered. */
  readonly #queue = new Fifo<Exchange>();
  /** The exchange whose body is being parsed. */
  #current: Exchange | null = null;
  /** A response is being written asynchronously (a stream): the queue waits. */
  #writing = false;
  /** No more requests: close once the queue is answered. */
  #closing = false;
  /** Unparsed bytes kept while the connection does not read (too many in flight). */
  #stash: Uint8Array | null = null;
  /** A request that may be upgraded waits for its answer: what follows is kept unparsed. */
  #upgrading = false;
  /** The server is shutting down (a socket upgraded now is told to close). */
  #shuttingDown = false;
  /** Within #parse (a handover then waits for its end). */
  #parsing = false;
  /** An accepted upgrade to hand over when the parse in progress ends. */
  #handOverDue: Exchange | null = null;
  #requestStart = -1;
  #remoteAddr: Deno.NetAddr | null = null;
  readonly #urlCache = new UrlCache();
  /** The last target's bytes and string: a connection mostly asks for the same paths. */
  #lastTarget = "";
  readonly #lastTargetBytes = new Uint8Array(64);
  #lastTargetLength = -1;
  /** The bytes of the last simple request (see request_memo.ts). */
  readonly #memo = new RequestMemo();
  /** The request just completed may be remembered. */
  #memoable = false;
  /**
   * The arena generation the remembered request's head was copied in (-1:
   * not copied), and where its fields start: while that generation lasts,
   * the request again needs no copy. A number, not the arena itself, so
   * that an idle connection holds no old arena.
   */
  #copyGeneration = -1;
  #copyFieldBase = 0;
  /** The request being parsed ends its execute(): it may be remembered. */
  #oneByOne = true;

  constructor(app: FetchApp, conn: Connection) {
    this.#app = app;
    this.#conn = conn;
    this.#parser = new HttpParser(this, {
      maxBody: app.options.maxBody,
      maxHeaderBytes: app.options.maxHeaderBytes,
      captureHeaders: true,
    });
  }

  get remoteAddr(): Deno.NetAddr {
    if (this.#remoteAddr === null) {
      try {
        const a = peerAddress(this.#conn.fd);
        this.#remoteAddr = { transport: "tcp", hostname: a.host, port: a.port };
      } catch {
        this.#remoteAddr = { transport: "tcp", hostname: "", port: 0 }; // already closed
      }
    }
    return this.#remoteAddr;
  }

  // ---- input ----

  data(conn: Connection, data: Uint8Array, start: number, end: number): void {
    if (this.#closing) return;
    // The answers to this read (sync handlers, pipelined) leave in one send.
    conn.cork();
    if (this.#stash !== null) {
      // Bytes kept at the in-flight limit go first; if they are kept again,
      // the new ones join them (never parsed ahead of them).
      const kept = this.#stash;
      this.#stash = null;
      this.#parse(kept, 0, kept.length);
      if (this.#stash !== null) {
        const more = this.#stash as Uint8Array;
        const joined = new Uint8Array(more.length + end - start);
        joined.set(more);
        joined.set(data.subarray(start, end), more.length);
        this.#stash = joined;
        conn.uncork();
        return;
      }
    }
    this.#parse(data, start, end);
    conn.uncork();
  }

  #parse(data: Uint8Array, start: number, end: number): void {
    this.#parsing = true;
    this.#parseRange(data, start, end);
    this.#parsing = false;
    const ex = this.#handOverDue;
    if (ex !== null) {
      this.#handOverDue = null;
      this.#handOver(ex);
    }
  }

  #parseRange(data: Uint8Array, start: number, end: number): void {
    const parser = this.#parser;
    if (parser.idle && this.#requestStart < 0) this.#requestStart = this.#app.reactor.now;
    let i = start;
    while (i < end && !this.#closing) {
      if (this.#queue.length >= MAX_IN_FLIGHT || this.#upgrading || this.#conn.outputFull) {
        // Enough answers pending, or the peer is not taking them (a file
        // behind, a large body): stop parsing, keep the rest, stop reading
        // until lowWater (as nginx takes the next pipelined request only once
        // the answer before it is out).
        this.#stash = data.slice(i, end);
        this.#conn.pauseReading();
        return;
      }
      if (parser.idle && this.#memo.matches(data, i, end)) {
        // The same bytes as the last simple request, from the same (idle)
        // state: the same request. The parser's fields (and its copy of the
        // head) still describe it: skip the parse.
        this.#app.repeats++;
        this.onHead(parser, true);
        i += this.#memo.length;
        this.onRequest(parser);
        continue;
      }
      const before = i;
      const fresh = parser.idle;
      // The parser's fields are about to describe another request.
      if (fresh) {
        // Traffic that never repeats itself stops being remembered (and
        // parsed one request per execute()) but now and then.
        this.#oneByOne = this.#memo.parseBegins();
        this.#copyGeneration = -1;
      }
      this.#memoable = false;
      i = parser.execute(data, i, end);
      if (fresh && this.#memoable && i - before <= MEMO_MAX && parser.idle) {
        this.#memo.remember(data, before, i);
      }
      if (i === before) break;
    }
    if (parser.idle) {
      this.#requestStart = -1;
      return;
    }
    // A request is left incomplete: its (slowloris) timeout runs from its
    // first byte; make the connection's timer fire by then.
    if (this.#requestStart < 0) this.#requestStart = this.#app.reactor.now;
    const t = this.#conn.timeouts;
    if (t !== null && t.requestMs > 0) this.#conn.pullTimer(this.#requestStart + t.requestMs);
  }

  /** The target as a string, reusing the last one when the bytes are the same. */
  #targetOf(p: HttpParser): string {
    const len = p.targetLength;
    const t = p.target;
    const last = this.#lastTargetBytes;
    if (len === this.#lastTargetLength) {
      let k = 0;
      while (k < len && t[k] === last[k]) k++;
      if (k === len) return this.#lastTarget;
    }
    const s = latin1(t, 0, len);
    if (len <= last.length) {
      for (let k = 0; k < len; k++) last[k] = t[k];
      this.#lastTargetLength = len;
      this.#lastTarget = s;
    }
    return s;
  }

  /**
   * The head of a request is complete: make the exchange and call the handler.
   *
   * @param repeat the remembered request again (from #parseRange, not the
   *   parser): its head's copy may be reused
   */
  onHead(p: HttpParser, repeat = false): boolean {
    const files = this.#app.files;
    if (files !== null) {
      const answer = files.answer(p, this.#app.options.handler !== null, this.#app.reactor.now);
      if (answer !== null) {
        this.#serveStatic(p, answer);
        return true;
      }
    }
    const fieldCount = p.fieldCount;
    const app = this.#app;
    // A repeat reuses its head's copy while that arena is current; any
    // other request (another in the same execute(), say) is copied.
    if (!repeat || this.#copyGeneration !== app.arenaGeneration) {
      app.copyHead(p);
      this.#copyGeneration = app.arenaGeneration;
      this.#copyFieldBase = app.arenaFieldBase;
    }
    const headBytes = app.arenaHead;
    const fields = app.arenaFields;
    const fieldBase = this.#copyFieldBase;
    // As Deno.serve: GET and HEAD have a null body, every other method a
    // stream (empty when nothing follows the head).
    const method = p.method;
    const body = method === 1 /* GET */ || method === 2 /* HEAD */ ? null : new BodySource();
    const hasBody = p.chunked || p.contentLength > 0;
    const target = this.#targetOf(p);
    const request = new ServerRequest(
      p.methodString(),
      target,
      app.options.origin,
      headBytes,
      fields,
      fieldBase,
      fieldCount,
      body,
      this.#urlCache,
    );
    const head = method === 2; // METHOD_HEAD
    const ex = new Exchange(this, request, body, head, p.versionMinor === 0, p.keepAlive);
    if (this.#app.accessLog !== null) {
      ex.target = target;
      ex.startedAt = performance.now();
    }
    if (body !== null) {
      body.onDrain = () => {
        if (!this.#closing && this.#queue.length < MAX_IN_FLIGHT) this.#conn.resumeReading();
      };
      if (p.expectContinue) {
        ex.expectContinue = true;
        // RFC 9110 10.1.1: 100 Continue once the handler reads the body.
        body.onFirstRead = () => {
          if (!ex.settled && !this.#conn.closed) {
            this.#conn.write(CONTINUE_100);
          }
        };
      }
    }
    if (
      method === 1 && fieldCount > 0 &&
      hasUpgradeField(headBytes, fields, fieldBase, fieldCount)
    ) {
      ex.upgrade = new UpgradeTicket(this.#app.websockets, ex.http10);
      offerUpgrade(request, ex.upgrade);
      this.#upgrading = true;
    }
    this.#queue.push(ex);
    if (body !== null && !hasBody) body.end();
    this.#current = hasBody ? ex : null;
    this.#call(ex);
    return true;
  }

  /**
   * A static answer: written now when nothing is owed before it (the usual
   * case), else queued in order behind the answers still pending.
   */
  #serveStatic(p: HttpParser, answer: StaticAnswer): void {
    this.#current = null;
    const app = this.#app;
    const http10 = p.versionMinor === 0;
    if (this.#queue.length === 0 && !this.#writing) {
      const keepAlive = answer.write(
        this.#conn,
        p.keepAlive && !this.#closing,
        http10,
        app.clock.value,
      );
      app.requests++;
      if (app.accessLog !== null) app.accessLog.add(this.#staticRecord(p, answer));
      if (!keepAlive) this.#closing = true;
      return;
    }
    const ex = new Exchange(
      this,
      placeholderRequest(app.options.origin),
      null,
      answer.headOnly,
      http10,
      p.keepAlive,
    );
    ex.staticAnswer = answer.detach();
    ex.settled = true;
    if (app.accessLog !== null) {
      ex.startedAt = performance.now();
      ex.staticLog = this.#staticRecord(p, answer);
    }
    this.#queue.push(ex);
  }

  /** The access-log record of a static answer, made while its head is at hand (duration 0 until logged). */
  #staticRecord(p: HttpParser, answer: StaticAnswer): AccessRecord {
    return {
      remote: this.remoteAddr.hostname,
      method: p.methodString(),
      target: this.#targetOf(p),
      versionMinor: p.versionMinor,
      status: answer.status,
      bytes: answer.bodyLength,
      referer: fieldValue(p, REFERER),
      userAgent: fieldValue(p, USER_AGENT),
      durationMs: 0,
    };
  }

  #call(ex: Exchange): void {
    const app = this.#app;
    let result: Response | Promise<Response>;
    try {
      result = app.options.handler!(ex.request, ex);
    } catch (error) {
      result = app.errorResponse(error);
    }
    if (result instanceof ResponseClass) {
      this.#settle(ex, result);
      return;
    }
    const reactor = app.reactor;
    reactor.asyncStarted();
    Promise.resolve(result).then(
      (res) => {
        reactor.asyncSettled();
        if (res instanceof ResponseClass) this.#settle(ex, res);
        else {this.#fail(
            ex,
            new TypeError(
              `the handler returned ${Object.prototype.toString.call(res)}, not a Response`,
            ),
          );}
      },
      (error) => {
        reactor.asyncSettled();
        this.#fail(ex, error);
      },
    );
  }

  #fail(ex: Exchange, error: unknown): void {
    const res = this.#app.errorResponse(error);
    if (res instanceof ResponseClass) this.#settle(ex, res);
    else {
      res.then(
        (r) => this.#settle(ex, r),
        () => this.#settle(ex, new Response("Internal Server Error", { status: 500 })),
      );
    }
  }

  onBody(data: Uint8Array, start: number, end: number): void {
    const body = this.#current?.body;
    if (body == null) return;
    body.push(data, start, end);
    if (!body.wantMore) this.#conn.pauseReading();
  }

  onRequest(p: HttpParser): boolean {
    this.#current?.body?.end();
    this.#current = null;
    this.#requestStart = -1;
    // Bytes behind a request that may become a WebSocket may be frames:
    // parse nothing more until its answer says which.
    if (this.#upgrading) return false;
    if (!p.keepAlive) {
      this.#closing = true; // answer what was asked, then close
      this.#closeIfDone();
      return false;
    }
    // Bytes a request without a body ends with may be remembered: when they
    // come again, they are the same request (see #parseRange).
    this.#memoable = this.#oneByOne && p.contentLength <= 0 && !p.chunked;
    // One request per execute() while the memo is in use, so that it is tried before the next.
    return !this.#oneByOne;
  }

  onError(status: number, reason: string): void {
    log.debug("fd {fd}: {status} {reason}", { fd: this.#conn.fd, status, reason });
    this.#current?.body?.fail(new Error(`request body invalid: ${reason}`));
    this.#current = null;
    this.#respondAndClose(status);
  }

  /** Queues a bare error response (after the answers already owed), then closes. */
  #respondAndClose(status: number): void {
    const ex = new Exchange(
      this,
      placeholderRequest(this.#app.options.origin),
      null,
      false,
      false,
      false,
    );
    this.#queue.push(ex);
    this.#closing = true;
    this.#settle(ex, new Response(reasonPhrase(status), { status }));
  }

  // ---- output, in order ----

  #settle(ex: Exchange, res: Response): void {
    ex.response = res;
    ex.settled = true;
    this.#flushQueue();
  }

  #flushQueue(): void {
    const conn = this.#conn;
    for (;;) {
      const ex = this.#queue.first();
      if (this.#writing || ex === undefined || !ex.settled) return;
      if (conn.closed) return;
      const answer = ex.staticAnswer;
      if (answer !== null) {
        ex.staticAnswer = null;
        const keep = ex.keepAlive && !this.#closing;
        this.#finish(ex, answer.write(conn, keep, ex.http10, this.#app.clock.value));
        continue;
      }
      if (ex.upgrade !== null) {
        if (ex.upgrade.accepts(ex.response)) {
          // Inside the parse: hand over once the rest of the read is kept.
          if (this.#parsing) this.#handOverDue = ex;
          else this.#handOver(ex);
          return;
        }
        // upgradeWebSocket() was called but its response not returned: that
        // socket will never open; tell it (error, close 1006), as Deno does.
        ex.upgrade.lost("the handler did not return the upgrade's response");
        this.#upgrading = false;
      }
      let result: boolean | Promise<boolean>;
      try {
        result = writeResponse(conn, ex.response!, {
          head: ex.head,
          http10: ex.http10,
          keepAlive: ex.keepAlive && !this.#closing && !unsentContinue(ex),
          date: this.#app.clock.value,
        });
      } catch (error) {
        // Not writable as given (a used body, say): answer 500 instead, once.
        log.error("cannot send the handler's response: {error}", { error });
        result = writeResponse(conn, new Response("Internal Server Error", { status: 500 }), {
          head: ex.head,
          http10: ex.http10,
          keepAlive: false,
          date: this.#app.clock.value,
        });
      }
      if (result instanceof Promise) {
        this.#writing = true;
        result.then((keep) => {
          this.#writing = false;
          this.#finish(ex, keep);
          this.#flushQueue();
        }, (error) => {
          this.#writing = false;
          log.error("response body failed: {error}", { error });
          this.#conn.abort("error");
        });
        return;
      }
      this.#finish(ex, result);
    }
  }

  /** The 101: the connection becomes the socket's, with the bytes kept behind the request. */
  #handOver(ex: Exchange): void {
    const ticket = ex.upgrade!;
    this.#queue.shift();
    this.#app.requests++;
    ex.sent();
    const log = this.#app.accessLog;
    if (log !== null) this.#logAccess(log, ex);
    this.#closing = true; // this protocol is done with the connection
    const pending = this.#stash;
    this.#stash = null;
    const conn = this.#conn;
    ticket.accept(conn, pending, this.#app.clock.value);
    // Upgraded while the server drains: the socket closes with 1001 at once.
    if (this.#shuttingDown) conn.shutdown();
    // The client sent FIN while its handler ran: the connection will not
    // report it again, so the socket hears it now (after the frames kept).
    else if (conn.peerFinished && !conn.closed) conn.protocol.end?.(conn);
  }

  #finish(ex: Exchange, keepAlive: boolean): void {
    this.#queue.shift();
    this.#app.requests++;
    ex.sent();
    const body = ex.body;
    if (body !== null && !body.complete) {
      if (unsentContinue(ex)) {
        // The client waits for 100 Continue that will not come: it may never
        // send the body, so the connection cannot carry another request (the
        // answer said Connection: close).
        keepAlive = false;
      } else {
        // Answered without reading it all: drop the rest as it arrives, so
        // the next request can be parsed (as Deno.serve does).
        body.discard();
        if (!this.#closing) this.#conn.resumeReading();
      }
    }
    const log = this.#app.accessLog;
    if (log !== null) this.#logAccess(log, ex);
    if (!keepAlive) this.#closing = true;
    this.#parseStash();
    this.#closeIfDone();
  }

  /**
   * Room again (an answer went out, or the output fell to low water): handle
   * the requests kept at the limit now (the client may send nothing more to
   * wake us), then read again.
   */
  #parseStash(): void {
    const conn = this.#conn;
    if (
      this.#stash === null || this.#queue.length >= MAX_IN_FLIGHT || this.#closing ||
      this.#upgrading || conn.outputFull || conn.closed
    ) return;
    const kept = this.#stash;
    this.#stash = null;
    conn.cork();
    this.#parse(kept, 0, kept.length);
    conn.uncork();
    if (this.#stash === null) conn.resumeReading();
  }

  /** The output fell to low water: parse what was kept, or read again. */
  lowWater(conn: Connection): void {
    if (this.#stash !== null) this.#parseStash();
    else if (!this.#closing && !this.#upgrading && this.#queue.length < MAX_IN_FLIGHT) {
      conn.resumeReading();
    }
  }

  #logAccess(log: AccessLog, ex: Exchange): void {
    const record = ex.staticLog;
    if (record !== null) {
      record.durationMs = performance.now() - ex.startedAt;
      log.add(record);
      return;
    }
    const res = ex.response!;
    const length = res.headers.get("content-length");
    const req = ex.request;
    log.add({
      remote: this.remoteAddr.hostname,
      method: req.method,
      target: ex.target,
      versionMinor: ex.http10 ? 0 : 1,
      status: res.status,
      bytes: ex.head ? 0 : length !== null ? Number(length) : -1,
      referer: req.headers.get("referer"),
      userAgent: req.headers.get("user-agent"),
      durationMs: performance.now() - ex.startedAt,
    });
  }

  #closeIfDone(): void {
    if (this.#closing && this.#queue.length === 0 && !this.#conn.closed) {
      this.#conn.closeAfterFlush();
    }
  }

  // ---- connection events ----

  end(conn: Connection): void {
    // The peer sent FIN. As Deno.serve, that is the client going away: the
    // signals of the requests still being handled abort (their answers are
    // still sent, should the peer be reading).
    const gone = new Error("the client closed the connection");
    this.#current?.body?.fail(gone);
    this.#current = null;
    this.#closing = true;
    for (const ex of this.#queue) if (!ex.settled) ex.request.abort(gone);
    if (this.#writing) {
      // A body is streaming to a client that left: stop it (closed() cancels
      // the stream), as Deno.serve does.
      conn.close("eof");
      return;
    }
    if (this.#queue.length === 0) conn.closeAfterFlush();
  }

  closed(conn: Connection, reason: CloseReason): void {
    responseConnectionClosed(conn); // a stream waiting for its next chunk is cancelled now
    const gone = new Error(`the connection closed (${reason})`);
    this.#current?.body?.fail(gone);
    for (const ex of this.#queue) {
      ex.staticAnswer?.drop();
      ex.request.abort(gone);
      ex.lost(gone);
      ex.upgrade?.lost();
    }
    this.#queue.clear();
    this.#stash = null;
  }

  requestStartedAt(): number {
    return this.#requestStart;
  }

  /** Answers in flight (a handler running, a body streaming): not idle. */
  busy(): boolean {
    return this.#queue.length > 0;
  }

  shutdown(conn: Connection): void {
    this.#closing = true;
    this.#shuttingDown = true;
    if (this.#queue.length === 0) conn.closeAfterFlush();
  }

  timedOut(conn: Connection, what: TimeoutKind): void {
    if (what === "request" && this.#queue.length === 0 && !this.#closing) {
      log.info("fd {fd}: request not complete in time: 408", { fd: conn.fd });
      this.#respondAndClose(408);
      return;
    }
    conn.close("timeout");
  }
}

/** A request standing in where no handler will see one (bare errors, static answers). */
function placeholderRequest(origin: string): ServerRequest {
  return new ServerRequest("GET", "/", origin, EMPTY_HEAD, EMPTY_FIELDS, 0, 0, null);
}
const EMPTY_HEAD = new Uint8Array(0);
const EMPTY_FIELDS = new Int32Array(0);

/** The URL origin of a listen address, for requests that carry no Host field. */
export function originOf(address: { host: string; port: number }): string {
  return `http://${formatAddress(address.host, address.port)}`;
}

/**
 * A protocol definition serving `handler` (for `Server`): what `serve()` and
 * `reactor serve --module` run. Not in the registry: it needs a function.
 */
export function fetchProtocol(
  handler: FetchHandler | null,
  options: Omit<FetchAppOptions, "handler" | "origin"> = {},
): ProtocolDefinition {
  return {
    name: "fetch",
    summary: handler === null ? "static files" : "a fetch handler (Deno.serve's contract)",
    flags: [],
    create(setup) {
      const app = new FetchApp(setup.context.reactor, {
        ...options,
        handler,
        origin: originOf(setup.address),
      });
      return fetchInstance(app);
    },
  };
}

/** A FetchApp as a server's protocol instance. */
export function fetchInstance(app: FetchApp): ProtocolInstance {
  return {
    connect: (conn) => app.connect(conn),
    metrics: () => [
      counter("requests_total", "HTTP requests answered.", app.requests),
      counter(
        "requests_repeated_total",
        "Requests taken without a parse: the same bytes as their connection's last.",
        app.repeats,
      ),
      counter("fetch_handler_errors_total", "Fetch handler exceptions and rejections.", app.errors),
      ...webSocketMetrics(app.websockets.stats),
      ...(app.files === null ? [] : staticMetrics(app.files)),
    ],
    stop: () => app.close(),
  };
}
