/**
 * The server side of one WebSocket: the object `upgradeWebSocket` returns (a
 * `WebSocket` to the app: the same members, events and errors as the socket
 * `Deno.upgradeWebSocket` gives) and, once the 101 is sent, the connection's
 * `Protocol`.
 *
 * - Events: `open` once the 101 is written; `message` per message (`data` a
 *   string, or an ArrayBuffer or Blob as `binaryType` says; `"arraybuffer"`
 *   by default on the server, as Deno); `close` with code, reason and
 *   `wasClean`; `error` before a `close` that was not clean.
 * - Sending writes a frame at once (corked while the peer's bytes are being
 *   handled, so the answers to one read leave in one `send`). There is no
 *   backpressure in the WebSocket API: `bufferedAmount` says what waits, and
 *   a writer that goes on past the connection's `maxOutputBytes` over its
 *   high-water mark, or a peer that takes nothing for the write timeout, is
 *   cut (close event 1006). Reading from the peer pauses while its output is
 *   at high water.
 * - Closing: `close()` sends a close frame and waits for the peer's (5 s at
 *   most); a peer's close frame is answered with the same code. The TCP
 *   connection is closed by the server once the handshake is done.
 * - `idleTimeout` (seconds, default 30, 0 off): as Deno, a ping after half
 *   of it without a frame from the peer, and close 1001 after the other half
 *   without an answer. The connection's own idle timeout does not apply.
 * - Graceful shutdown sends close 1001.
 *
 * @module
 */

import type { CloseReason, Connection, Protocol, TimeoutKind } from "../../../connection.ts";
import type { Timer } from "../../../../reactor/timers.ts";
import type { Reactor } from "../../../../reactor/reactor.ts";
import { counter, gauge, type Metric } from "../../definition.ts";
import {
  CLOSE_ABNORMAL,
  CLOSE_GOING_AWAY,
  CLOSE_NO_STATUS,
  DEFAULT_MAX_MESSAGE,
  frameHeaderLength,
  FrameParser,
  type FrameSink,
  isValidCloseCode,
  MAX_MAX_MESSAGE,
  MIN_MAX_MESSAGE,
  OP_BINARY,
  OP_CLOSE,
  OP_PING,
  OP_PONG,
  OP_TEXT,
  writeFrameHeader,
} from "./frame.ts";

/** The event whose `on*` handler is being called directly (outside a dispatch), or null. */
let directEvent: Event | null = null;
const eventCurrentTarget = Object.getOwnPropertyDescriptor(Event.prototype, "currentTarget")!.get!;
const eventPhase = Object.getOwnPropertyDescriptor(Event.prototype, "eventPhase")!.get!;

/**
 * `Base` with `currentTarget` and `eventPhase` that read, while its `on*`
 * handler is called directly, as they would inside a dispatch (the socket,
 * AT_TARGET): apps written for Deno do `e.currentTarget.send(...)`. A
 * prototype getter costs nothing per event (defining the properties on each
 * event cost ~425 ns).
 */
// deno-lint-ignore no-explicit-any
function directEvents<C extends new (...args: any[]) => Event>(Base: C): C {
  const Direct = class extends Base {};
  Object.defineProperties(Direct.prototype, {
    currentTarget: {
      get(this: Event) {
        return directEvent === this ? this.target : eventCurrentTarget.call(this);
      },
      configurable: true,
    },
    eventPhase: {
      get(this: Event) {
        return directEvent === this ? 2 : eventPhase.call(this);
      },
      configurable: true,
    },
  });
  return Direct;
}

const OpenEvent = directEvents(Event);
const WsMessageEvent = directEvents(MessageEvent);
const WsCloseEvent = directEvents(CloseEvent);
const WsErrorEvent = directEvents(ErrorEvent);

/** Counters of one server's WebSockets (for /metrics). */
export class WebSocketStats {
  /** Sockets open now. */
  open = 0;
  /** Sockets opened (101 sent). */
  opened = 0;
  /** Messages received. */
  messagesIn = 0;
  /** Messages sent. */
  messagesOut = 0;
  /** Payload bytes received (messages). */
  bytesIn = 0;
  /** Payload bytes sent (messages). */
  bytesOut = 0;
  /** Sockets closed by a protocol error of the peer (1002, 1007, 1009). */
  protocolErrors = 0;
}

/** What the sockets of one server share. */
export interface WebSocketSettings {
  /** Largest message received, in bytes (1009 above). */
  readonly maxMessage: number;
  /** The server's counters. */
  readonly stats: WebSocketStats;
}

/** The counters as /metrics lines. */
export function webSocketMetrics(stats: WebSocketStats): Metric[] {
  return [
    gauge("websockets_open", "WebSockets open now.", stats.open),
    counter("websockets_opened_total", "WebSockets opened (101 sent).", stats.opened),
    counter(
      "websocket_messages_received_total",
      "WebSocket messages received.",
      stats.messagesIn,
    ),
    counter("websocket_messages_sent_total", "WebSocket messages sent.", stats.messagesOut),
    counter(
      "websocket_received_bytes_total",
      "WebSocket message payload bytes received.",
      stats.bytesIn,
    ),
    counter(
      "websocket_sent_bytes_total",
      "WebSocket message payload bytes sent.",
      stats.bytesOut,
    ),
    counter(
      "websocket_protocol_errors_total",
      "WebSockets closed for a protocol error of the peer (1002, 1007, 1009).",
      stats.protocolErrors,
    ),
  ];
}

/** Settings with the default message limit and fresh counters. */
export function webSocketSettings(maxMessage: number = DEFAULT_MAX_MESSAGE): WebSocketSettings {
  // The CLI's range (--max-ws-message).
  if (
    !Number.isInteger(maxMessage) || maxMessage < MIN_MAX_MESSAGE || maxMessage > MAX_MAX_MESSAGE
  ) {
    throw new TypeError(
      `maxWebSocketMessage must be an integer from ${MIN_MAX_MESSAGE} to ${MAX_MAX_MESSAGE}: ${maxMessage}`,
    );
  }
  return { maxMessage, stats: new WebSocketStats() };
}

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/** How long a close we sent waits for the peer's before the connection is cut. */
const CLOSE_WAIT_MS = 5000;

/** Frames are built here: 10 bytes of header room, then the payload. */
const SCRATCH = new Uint8Array(64 << 10);
const HEADER_ROOM = 10;
const PAYLOAD_ROOM = SCRATCH.length - HEADER_ROOM;
const PAYLOAD = SCRATCH.subarray(HEADER_ROOM);
const SCRATCH_POINTER = Deno.UnsafePointer.of(SCRATCH)!;
/** For each header length (2, 4, 10): the view and address where that frame starts. */
const FRAME_VIEW: Uint8Array[] = [];
const FRAME_POINTER: Deno.PointerObject[] = [];
for (const h of [2, 4, 10]) {
  FRAME_VIEW[h] = SCRATCH.subarray(HEADER_ROOM - h);
  FRAME_POINTER[h] = Deno.UnsafePointer.offset(SCRATCH_POINTER, HEADER_ROOM - h)!;
}
const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

type Listener = ((this: WebSocket, ev: Event) => unknown) | null;

/** A server-side WebSocket on a reactor connection; see the module comment. */
export class ServerWebSocket extends EventTarget implements Protocol, FrameSink {
  /** readyState: the 101 is not sent yet. */
  static readonly CONNECTING = CONNECTING;
  /** readyState: open. */
  static readonly OPEN = OPEN;
  /** readyState: a close frame was sent, the peer's awaited. */
  static readonly CLOSING = CLOSING;
  /** readyState: closed. */
  static readonly CLOSED = CLOSED;

  #conn: Connection | null = null;
  #state = CONNECTING;
  #binaryType: BinaryType = "arraybuffer";
  readonly #protocol: string;
  readonly #url: string;
  readonly #settings: WebSocketSettings;
  #parser: FrameParser | null = null;
  readonly #idleMs: number;
  #timer: Timer | null = null;
  #pinged = false;
  #pingAt = 0;
  #closeSent = false;
  /** Sends waiting behind a Blob being read (in order), or null. */
  #sendQueue: unknown[] | null = null;
  /**
   * A close() whose frame must wait, or null: called before the 101 went out
   * (sent right after it), or while a Blob was being read (sent after the queue).
   */
  #pendingClose: [number | undefined, string] | null = null;
  /** Event types (bits) whose `on*` listener is registered with the EventTarget. */
  #registered = 0;
  /** Event types (bits) that have listeners added with `addEventListener`. */
  #listened = 0;
  #onopen: Listener = null;
  #onmessage: Listener = null;
  #onclose: Listener = null;
  #onerror: Listener = null;

  /**
   * @param settings the server's message limit and counters
   * @param protocol the negotiated subprotocol ("" for none)
   * @param idleTimeoutS seconds without a frame before a ping, times two (0: off)
   * @param url the request's URL
   */
  constructor(settings: WebSocketSettings, protocol: string, idleTimeoutS: number, url: string) {
    super();
    this.#settings = settings;
    this.#protocol = protocol;
    this.#idleMs = idleTimeoutS * 1000;
    this.#url = url;
  }

  /**
   * The one listener behind the `on*` attributes of every socket (no closure
   * per socket): calls the attribute's handler of the socket the event is
   * dispatched on. A handler that returns a promise gets the loop's
   * microtask turns, as an async fetch handler does: its `await`s on settled
   * promises go on at once, not at the loop's next wait (up to 5 ms).
   */
  static #forward(this: ServerWebSocket, e: Event): void {
    const handler = this.#handler(eventBit(e.type));
    if (handler === null) return;
    const result = handler.call(self(this), e);
    if (result instanceof Promise && this.#conn !== null) letPromisesRun(this.#conn.reactor);
  }

  #handler(bit: number): Listener {
    return bit === MESSAGE_EVENT
      ? this.#onmessage
      : bit === OPEN_EVENT
      ? this.#onopen
      : bit === CLOSE_EVENT
      ? this.#onclose
      : this.#onerror;
  }

  /**
   * An `on*` attribute was set. While no listener of its type was added, it
   * is called directly by `#emit` (no listener record: an idle socket costs
   * ~0.9 KiB less, an event ~100 ns less); once one is, the attribute's
   * listener takes its place in the list, where the spec puts it.
   */
  #attach(type: string, bit: number): void {
    if ((this.#registered & bit) !== 0 || (this.#listened & bit) === 0) return;
    if (this.#handler(bit) === null) return;
    this.#registered |= bit;
    super.addEventListener(type, ServerWebSocket.#forward);
  }

  /** As EventTarget's; an `on*` attribute set before keeps its place ahead of the listener. */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    const bit = eventBit(String(type));
    if (bit !== 0) {
      this.#listened |= bit;
      this.#attach(type, bit);
    }
    super.addEventListener(type, listener, options);
  }

  /**
   * Fires `e` (`bit` its type): through `dispatchEvent` when listeners of
   * its type were added; else the `on*` handler is called directly, after a
   * dispatch with no listener that only sets `e.target` (a handler that
   * throws is reported as a listener's would be: `reportError`).
   */
  #emit(e: Event, bit: number): void {
    if (((this.#registered | this.#listened) & bit) !== 0) {
      this.dispatchEvent(e);
      return;
    }
    const handler = this.#handler(bit);
    if (handler === null) return;
    this.dispatchEvent(e);
    let result: unknown;
    directEvent = e; // currentTarget and eventPhase as in a dispatch (see directEvents)
    try {
      result = handler.call(self(this), e);
    } catch (error) {
      reportError(error);
      return;
    } finally {
      directEvent = null;
    }
    if (result instanceof Promise && this.#conn !== null) letPromisesRun(this.#conn.reactor);
  }

  // ---- the WebSocket interface ----

  /** readyState: the 101 is not sent yet. */
  get CONNECTING(): number {
    return CONNECTING;
  }
  /** readyState: open. */
  get OPEN(): number {
    return OPEN;
  }
  /** readyState: closing. */
  get CLOSING(): number {
    return CLOSING;
  }
  /** readyState: closed. */
  get CLOSED(): number {
    return CLOSED;
  }

  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  get readyState(): number {
    return this.#state;
  }

  /** The negotiated subprotocol, or "". */
  get protocol(): string {
    return this.#protocol;
  }

  /** Extensions in use: none (permessage-deflate is not offered). */
  get extensions(): string {
    return "";
  }

  /** The URL of the request that was upgraded. */
  get url(): string {
    return this.#url;
  }

  /** How binary messages arrive: "arraybuffer" (the default, as Deno's server sockets) or "blob". */
  get binaryType(): BinaryType {
    return this.#binaryType;
  }
  set binaryType(value: BinaryType) {
    if (value === "blob" || value === "arraybuffer") this.#binaryType = value;
  }

  /** Bytes sent and not yet taken by the peer (frame headers included). */
  get bufferedAmount(): number {
    if (this.#state !== OPEN || this.#conn === null) return 0;
    let n = this.#conn.output.length;
    if (this.#sendQueue !== null) { for (const d of this.#sendQueue) n += byteSize(d); }
    return n;
  }

  /** The `open` handler. */
  get onopen(): Listener {
    return this.#onopen;
  }
  set onopen(f: Listener) {
    this.#onopen = typeof f === "function" ? f : null;
    this.#attach("open", OPEN_EVENT);
  }
  /** The `message` handler. */
  get onmessage(): Listener {
    return this.#onmessage;
  }
  set onmessage(f: Listener) {
    this.#onmessage = typeof f === "function" ? f : null;
    this.#attach("message", MESSAGE_EVENT);
  }
  /** The `close` handler. */
  get onclose(): Listener {
    return this.#onclose;
  }
  set onclose(f: Listener) {
    this.#onclose = typeof f === "function" ? f : null;
    this.#attach("close", CLOSE_EVENT);
  }
  /** The `error` handler. */
  get onerror(): Listener {
    return this.#onerror;
  }
  set onerror(f: Listener) {
    this.#onerror = typeof f === "function" ? f : null;
    this.#attach("error", ERROR_EVENT);
  }

  /**
   * Sends a message: a string as text, bytes (ArrayBuffer, a view, a Blob)
   * as binary. Throws while connecting; does nothing once closing.
   */
  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): void {
    if (arguments.length === 0) {
      throw new TypeError("Failed to execute 'send' on 'WebSocket': 1 argument required");
    }
    if (this.#state === CONNECTING) {
      throw new DOMException("'readyState' not OPEN", "InvalidStateError");
    }
    if (this.#state !== OPEN) return;
    if (this.#sendQueue !== null) {
      this.#sendQueue.push(data);
      return;
    }
    this.#sendNow(data);
  }

  #sendNow(data: unknown): void {
    if (typeof data === "string") this.#sendText(data);
    else if (data instanceof ArrayBuffer || data instanceof SharedArrayBuffer) {
      this.#sendBytes(OP_BINARY, new Uint8Array(data));
    } else if (ArrayBuffer.isView(data)) {
      this.#sendBytes(OP_BINARY, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } else if (data instanceof Blob) {
      this.#sendQueue = [data];
      this.#drainQueue();
    } else this.#sendText(String(data));
  }

  /** Sends queued data in order, reading each Blob as it comes. */
  async #drainQueue(): Promise<void> {
    const queue = this.#sendQueue!;
    while (queue.length > 0) {
      const item = queue[0];
      let data: unknown = item;
      if (item instanceof Blob) data = await item.arrayBuffer();
      queue.shift();
      // Closed by the peer or failed: drop the rest. Closed by close(): what
      // was queued before it still goes, then the close frame.
      if (this.#state !== OPEN && this.#pendingClose === null) break;
      this.#sendNow(data instanceof Blob ? String(data) : data);
    }
    this.#sendQueue = null;
    const close = this.#pendingClose;
    if (close !== null) {
      this.#pendingClose = null;
      if (this.#state === CLOSING) {
        this.#sendClose(close[0], close[1]);
        this.#armTimer(CLOSE_WAIT_MS);
      }
    }
  }

  /**
   * Starts the closing handshake: a close frame with `code` (1000 or
   * 3000-4999, or any code valid on the wire) and `reason` (123 bytes at
   * most).
   */
  close(code?: number, reason?: string): void {
    if (code !== undefined) {
      code = Math.min(65535, Math.max(0, Math.trunc(Number(code)) || 0));
      if (!isValidCloseCode(code)) {
        throw new DOMException(
          `The close code must be either 1000 or in the range of 3000 to 4999: received ${code}`,
          "InvalidAccessError",
        );
      }
    }
    if (reason !== undefined) {
      reason = String(reason);
      if (encoder.encode(reason).length > 123) {
        throw new DOMException("The close reason may not be longer than 123 bytes", "SyntaxError");
      }
    }
    const state = this.#state;
    if (state !== OPEN && state !== CONNECTING) return;
    this.#state = CLOSING;
    if (state === CONNECTING || this.#sendQueue !== null) {
      // Before the 101, or behind a Blob being read (what was sent first goes first).
      this.#pendingClose = [code, reason ?? ""];
      return;
    }
    this.#sendClose(code, reason ?? "");
    this.#armTimer(CLOSE_WAIT_MS);
  }

  // ---- the server's side ----

  /**
   * The 101 is written on `conn`: this socket becomes its protocol. `pending`
   * holds bytes the client sent after the upgrade request, if any.
   */
  accept(conn: Connection, pending: Uint8Array | null): void {
    this.#conn = conn;
    conn.protocol = this;
    const stats = this.#settings.stats;
    stats.open++;
    stats.opened++;
    const later = this.#pendingClose; // close() before the 101: after the open event
    this.#pendingClose = null;
    this.#state = OPEN;
    if (this.#idleMs > 0) this.#armTimer(this.#idleMs / 2);
    this.#emit(new OpenEvent("open"), OPEN_EVENT);
    if (later !== null) this.close(later[0], later[1]);
    conn.resumeReading();
    if (pending !== null && !conn.closed) this.data(conn, pending, 0, pending.length);
  }

  /** The upgrade will not happen (the client left first): error and close events. */
  abandon(why: string): void {
    if (this.#state === CLOSED) return;
    this.#state = CLOSED;
    this.#emit(new WsErrorEvent("error", { message: why }), ERROR_EVENT);
    this.#emit(new WsCloseEvent("close", { code: CLOSE_ABNORMAL, wasClean: false }), CLOSE_EVENT);
  }

  // ---- Protocol ----

  /** Frames from the peer. */
  data(conn: Connection, data: Uint8Array, start: number, end: number): void {
    const parser = this.#parser ??= new FrameParser(this, this.#settings.maxMessage);
    if (parser.done || this.#state === CLOSED) return;
    conn.cork();
    parser.execute(data, start, end);
    conn.uncork();
  }

  /** The peer sent FIN: without a close frame, that is an abnormal closure. */
  end(conn: Connection): void {
    conn.closeAfterFlush();
  }

  /** No request timeout and no HTTP idle timeout: idleTimeout pings instead. */
  busy(): boolean {
    return true;
  }

  /** Graceful shutdown: close 1001, then wait for the peer's close frame. */
  shutdown(conn: Connection): void {
    if (this.#state === OPEN) this.close(CLOSE_GOING_AWAY, "server shutting down");
    else if (this.#state !== CLOSING) conn.closeAfterFlush();
  }

  /** A stalled write (the peer takes nothing): cut. */
  timedOut(conn: Connection, _what: TimeoutKind): void {
    conn.close("timeout");
  }

  /** The connection is gone: a close event (1006 unless the handshake finished). */
  closed(_conn: Connection, reason: CloseReason): void {
    this.#parser?.stop();
    this.#stopTimer();
    if (this.#state === CLOSED) return;
    this.#closedNow();
    this.#emit(
      new WsErrorEvent("error", {
        message: `the connection closed without a close frame (${reason})`,
      }),
      ERROR_EVENT,
    );
    this.#emit(new WsCloseEvent("close", { code: CLOSE_ABNORMAL, wasClean: false }), CLOSE_EVENT);
  }

  // ---- FrameSink ----

  /** A text message. */
  onText(text: string, size: number): void {
    if (this.#state !== OPEN) return;
    const stats = this.#settings.stats;
    stats.messagesIn++;
    stats.bytesIn += size;
    this.#emit(new WsMessageEvent("message", { data: text, origin: this.#url }), MESSAGE_EVENT);
  }

  /** A binary message. */
  onBinary(data: Uint8Array<ArrayBuffer>): void {
    if (this.#state !== OPEN) return;
    const stats = this.#settings.stats;
    stats.messagesIn++;
    stats.bytesIn += data.length;
    const payload = this.#binaryType === "blob" ? new Blob([data]) : data.buffer;
    this.#emit(new WsMessageEvent("message", { data: payload, origin: this.#url }), MESSAGE_EVENT);
  }

  /** A ping: pong with the same payload. */
  onPing(payload: Uint8Array, start: number, end: number): void {
    if (this.#state === OPEN) this.#sendFrame(OP_PONG, payload, start, end);
  }

  /** A pong: nothing (its arrival counts as activity for the idle timeout). */
  onPong(_payload: Uint8Array, _start: number, _end: number): void {}

  /** The peer's close frame: answer it (if we did not start), then close the TCP connection. */
  onClose(code: number, reason: string): void {
    if (!this.#closeSent) this.#sendClose(code === CLOSE_NO_STATUS ? undefined : code, reason);
    this.#finish(code, reason, true);
  }

  /** The peer broke the protocol: close frame with `code`, error and close events. */
  onFail(code: number, reason: string): void {
    this.#settings.stats.protocolErrors++;
    this.#fail(code, reason);
  }

  /** Ends the socket for `reason`: a close frame with `code` (unless sent), error and close events. */
  #fail(code: number, reason: string): void {
    if (!this.#closeSent) this.#sendClose(code, reason);
    if (this.#state !== CLOSED) {
      this.#emit(new WsErrorEvent("error", { message: reason }), ERROR_EVENT);
    }
    this.#finish(code, reason, false);
  }

  #finish(code: number, reason: string, clean: boolean): void {
    this.#stopTimer();
    const conn = this.#conn!;
    conn.closeAfterFlush();
    if (this.#state === CLOSED) return;
    this.#closedNow();
    this.#emit(new WsCloseEvent("close", { code, reason, wasClean: clean }), CLOSE_EVENT);
  }

  /** readyState becomes CLOSED (once): the socket no longer counts as open. */
  #closedNow(): void {
    this.#state = CLOSED;
    this.#settings.stats.open--;
  }

  // ---- timers ----

  #armTimer(ms: number): void {
    const reactor = this.#conn!.reactor;
    if (this.#timer === null) this.#timer = reactor.setTimer(ms, () => this.#tick());
    else reactor.resetTimer(this.#timer, ms);
  }

  #stopTimer(): void {
    if (this.#timer !== null && this.#conn !== null) this.#conn.reactor.cancelTimer(this.#timer);
  }

  #tick(): void {
    const conn = this.#conn!;
    if (conn.closed) return;
    if (this.#state === CLOSING) {
      conn.close("timeout"); // the peer never answered our close frame
      return;
    }
    if (this.#state !== OPEN) return;
    const half = this.#idleMs / 2;
    const now = conn.reactor.now;
    const idle = now - conn.lastRead;
    if (this.#pinged && conn.lastRead >= this.#pingAt) this.#pinged = false; // answered
    if (idle < half) {
      this.#armTimer(half - idle);
    } else if (!this.#pinged) {
      this.#pinged = true;
      this.#pingAt = now;
      this.#sendFrame(OP_PING, EMPTY, 0, 0);
      this.#armTimer(half);
    } else {
      this.#fail(CLOSE_GOING_AWAY, "No response from ping frame.");
    }
  }

  // ---- frames out ----

  #sendClose(code: number | undefined, reason: string): void {
    this.#closeSent = true;
    if (code === undefined) {
      this.#sendFrame(OP_CLOSE, EMPTY, 0, 0);
      return;
    }
    const r = encoder.encode(reason);
    const payload = new Uint8Array(2 + r.length);
    payload[0] = code >>> 8;
    payload[1] = code & 0xff;
    payload.set(r, 2);
    this.#sendFrame(OP_CLOSE, payload, 0, payload.length);
  }

  #sendText(s: string): void {
    const len = s.length;
    let n = -1;
    if (len <= 128) {
      // Short and ASCII (most messages): a copy loop beats encodeInto's call.
      const out = PAYLOAD;
      let k = 0;
      for (; k < len; k++) {
        const c = s.charCodeAt(k);
        if (c >= 0x80) break;
        out[k] = c;
      }
      if (k === len) n = len;
    }
    if (n < 0 && len * 3 <= PAYLOAD_ROOM) n = encoder.encodeInto(s, PAYLOAD).written;
    if (n < 0) {
      this.#sendBytes(OP_TEXT, encoder.encode(s));
      return;
    }
    this.#count(n);
    this.#writeScratch(OP_TEXT, n);
  }

  #sendBytes(opcode: number, bytes: Uint8Array): void {
    this.#count(bytes.length);
    this.#sendFrame(opcode, bytes, 0, bytes.length);
  }

  #count(n: number): void {
    const stats = this.#settings.stats;
    stats.messagesOut++;
    stats.bytesOut += n;
  }

  /** One final frame of `opcode` with `payload[start, end)`. */
  #sendFrame(opcode: number, payload: Uint8Array, start: number, end: number): void {
    const conn = this.#conn;
    if (conn === null || conn.closed) return;
    const n = end - start;
    if (n <= PAYLOAD_ROOM) {
      if (n <= 64) { for (let k = 0; k < n; k++) PAYLOAD[k] = payload[start + k]; }
      else PAYLOAD.set(payload.subarray(start, end));
      this.#writeScratch(opcode, n);
      return;
    }
    const header = new Uint8Array(10);
    const h = writeFrameHeader(header, 0, opcode, n);
    conn.write(header, 0, h);
    conn.write(payload, start, end);
  }

  /** Sends the frame whose `n` payload bytes are in PAYLOAD: header in front, one write. */
  #writeScratch(opcode: number, n: number): void {
    const conn = this.#conn;
    if (conn === null || conn.closed) return;
    const h = frameHeaderLength(n);
    writeFrameHeader(SCRATCH, HEADER_ROOM - h, opcode, n);
    conn.writeFrom(FRAME_POINTER[h], FRAME_VIEW[h], h + n);
  }
}

// `instanceof WebSocket` holds, as for Deno's socket; every member WebSocket
// defines is defined above (its own are branded and would throw here).
Object.setPrototypeOf(ServerWebSocket.prototype, WebSocket.prototype);

const OPEN_EVENT = 1;
const MESSAGE_EVENT = 2;
const CLOSE_EVENT = 4;
const ERROR_EVENT = 8;

/** The bit of an event type the socket fires, or 0. */
function eventBit(type: string): number {
  return type === "message"
    ? MESSAGE_EVENT
    : type === "open"
    ? OPEN_EVENT
    : type === "close"
    ? CLOSE_EVENT
    : type === "error"
    ? ERROR_EVENT
    : 0;
}

/** Turns of the microtask queue the loop lets run after a handler returned a promise. */
const PROMISE_TURNS = 4;

/**
 * Tells the loop that promise reactions are pending for the next few
 * microtask turns (`asyncStarted`), and settles after them: the loop drains
 * the queue after this dispatch instead of waiting first.
 */
function letPromisesRun(reactor: Reactor): void {
  reactor.asyncStarted();
  let turns = PROMISE_TURNS;
  const tick = () => {
    if (--turns > 0) queueMicrotask(tick);
    else reactor.asyncSettled();
  };
  queueMicrotask(tick);
}

/** The socket as the `WebSocket` it stands for (`this` of its handlers). */
function self(s: ServerWebSocket): WebSocket {
  return s as unknown as WebSocket;
}

function byteSize(d: unknown): number {
  if (typeof d === "string") return d.length;
  if (d instanceof Blob) return d.size;
  if (d instanceof ArrayBuffer || ArrayBuffer.isView(d)) return d.byteLength;
  return 0;
}
