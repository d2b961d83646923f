/**
 * A TCP connection on the reactor: reads into the context's shared buffer,
 * writes straight to `send`, and keeps only what `send` could not take.
 *
 * - Read: level-triggered reads once per event; edge-triggered reads until
 *   EAGAIN or a short read (one that did not fill the buffer drained the
 *   socket: what arrives after it raises a new edge), reading on past a
 *   short read only when the event carried the peer's FIN or an error, so
 *   the end is seen. EOF, ECONNRESET, a hang-up and a socket error end the
 *   connection.
 * - Write: `send` at once. Only on a partial send or EAGAIN is the rest kept
 *   in the output buffer and writable interest armed; it is disarmed when the
 *   buffer drains (no level-triggered writable storm).
 * - Backpressure belongs to the protocol: when the waiting output reaches the
 *   high-water mark, `write` returns false and `Protocol.highWater` runs (by
 *   default: stop reading from this peer); when it falls to the low-water
 *   mark, `Protocol.lowWater` runs (by default: read again) and
 *   `whenWritable()` resolves. A writer that goes on writing after `write`
 *   said stop, past `maxOutputBytes` more, is cut ("overflow"); one large
 *   write (of any size) to a peer that reads is not. A peer that takes no
 *   bytes at all is caught by the write timeout.
 * - Files: `sendFile` queues a file range behind the output; its bytes go
 *   from the file to the socket by sendfile(2) and never enter JS. A
 *   partial sendfile or EAGAIN arms writable interest exactly as a partial
 *   send does, and the file bytes still to go count toward the high-water
 *   mark (they are output waiting, even if not in memory). Writes made
 *   while a file waits queue behind it.
 * - Close: the fd is closed at once; the protocol's `closed` and the owner's
 *   callback run in the reactor's deferred phase, never inside the caller.
 * - Half-close: after the peer's FIN, pending output is flushed, then close.
 *
 * @module
 */

import { getLogger } from "../log/mod.ts";
import { MSG_MORE, MSG_NOSIGNAL, SHUT_WR } from "../syscalls/constants.ts";
import { sendFileRange } from "../syscalls/files.ts";
import { EAGAIN, EBADF, EINTR, errnoName } from "../syscalls/errno.ts";
import { close, errno, recv_ptr, send, send_ptr, shutdown } from "../syscalls/libc.ts";
import { resetOnClose } from "../syscalls/socket.ts";
import { Interest, Ready } from "../reactor/interest.ts";
import type { Deferred, Handler, Reactor } from "../reactor/reactor.ts";
import type { Timer } from "../reactor/timers.ts";
import type { ConnectionContext, ConnectionLimits, Timeouts } from "./context.ts";
import { OutputBuffer } from "./output_buffer.ts";
import type { IoUringStreams } from "../reactor/io_uring_streams.ts";

const log = getLogger(["reactor", "connection"]);

/** The error for a write whose range leaves its buffer (sent, it would leak memory). */
function outOfRange(start: number, end: number, data: Uint8Array): RangeError {
  return new RangeError(`write of [${start}, ${end}) outside a buffer of ${data.length} bytes`);
}

const READ_BITS = Ready.READABLE | Ready.READ_CLOSED;
const GONE_BITS = Ready.HANGUP | Ready.ERROR;
/** An event that may carry the peer's end: edge-triggered reads go on to EOF or EAGAIN. */
const END_BITS = Ready.READ_CLOSED | GONE_BITS;

/** Why a connection closed. */
export type CloseReason =
  | "eof" // the peer closed and everything was flushed
  | "reset" // ECONNRESET, EPIPE or another socket error, or we reset it
  | "hangup" // a hang-up or socket error reported by the backend
  | "local" // our side decided (protocol, shutdown)
  | "overflow" // the writer ignored backpressure and the peer did not read
  | "timeout" // a timeout expired
  | "error" // the protocol threw
  | "shutdown"; // the server stopped before the connection finished

/** Which timeout expired. */
export type TimeoutKind = "idle" | "request" | "write";

/** How long a closing connection keeps reading (and discarding) after its FIN. */
export const LINGER_MS = 2000;

/**
 * What a protocol (echo, http, proxy, yours) implements to plug into a
 * connection. Only `data` is required.
 */
export interface Protocol {
  /**
   * Bytes arrived: `data[start, end)`. `data` is the shared read buffer,
   * valid during this call only: copy what you keep.
   */
  data(conn: Connection, data: Uint8Array, start: number, end: number): void;
  /** The peer sent FIN. Without this method: flush what is pending, then close. */
  end?(conn: Connection): void;
  /**
   * The output waiting reached the high-water mark: stop producing. Without
   * this method the connection stops reading from its peer.
   */
  highWater?(conn: Connection): void;
  /**
   * The output waiting fell to the low-water mark after a `highWater`: go
   * on. Without this method the connection reads from its peer again.
   */
  lowWater?(conn: Connection): void;
  /** Everything queued has been sent (after a send that could not take it all). */
  drained?(conn: Connection): void;
  /** The connection is closed and its fd gone; runs in the reactor's deferred phase. */
  closed?(conn: Connection, reason: CloseReason): void;
  /**
   * When the request in progress began (reactor ms), or -1 between requests.
   * Drives the request (header) timeout; without this method only the idle
   * and write timeouts apply.
   */
  requestStartedAt?(): number;
  /**
   * Whether the protocol has work in flight on this connection (a handler
   * running, a response streaming): then it is not idle, whatever moved.
   * Without this method only traffic counts.
   */
  busy?(): boolean;
  /**
   * The server is shutting down: finish what is in flight, then close.
   * Without this method: stop reading, flush, close.
   */
  shutdown?(conn: Connection): void;
  /** A timeout expired (`what` says which). Without this method: close. */
  timedOut?(conn: Connection, what: TimeoutKind): void;
}

/**
 * An open file that `Connection.sendFile` sends from. It may be shared (an
 * open-file cache): the connection calls `release()` exactly once, when the
 * range is sent or dropped, and never closes `fd` itself.
 */
export interface FileSource {
  /** The open file (read by sendfile with an explicit offset, so it may be shared). */
  readonly fd: number;
  /** The connection is done with this range. */
  release(): void;
}

/** A file range waiting behind the output buffer, and what was written after it. */
interface FileSegment {
  source: FileSource;
  offset: number;
  end: number;
  /** Bytes written while this range waited: they go after it. */
  after: OutputBuffer | null;
}

/** Called once a connection is closed, after its protocol's `closed`. */
export type CloseListener = (conn: Connection, reason: CloseReason) => void;

/** One accepted (or connected) nonblocking TCP socket. */
export class Connection implements Handler, Deferred {
  /** The socket. -1 once closed. */
  fd: number;
  /** What this connection shares with the others of its reactor. */
  readonly context: ConnectionContext;
  /** The reactor this connection lives on. */
  readonly reactor: Reactor;
  /** The protocol fed with this connection's bytes. */
  protocol: Protocol;
  /** Bytes `send` could not take yet. */
  readonly output: OutputBuffer = new OutputBuffer();
  /** Free for the protocol or the server (e.g. a slot in a connection list). */
  tag = 0;
  /** `reactor.now` when the peer's bytes last arrived (or when the connection opened). */
  lastRead = 0;
  /** `reactor.now` when the peer last took queued bytes (or when output was first queued). */
  lastWrite = 0;
  /** Bytes that were still waiting when the connection closed: what the peer never got. */
  unsentAtClose = 0;
  #timeouts: Timeouts | null = null;
  #timer: Timer | null = null;
  #dueKind: TimeoutKind = "idle";
  readonly #limits: ConnectionLimits;
  readonly #onClose: CloseListener | null;
  #closeReason: CloseReason = "local";
  #readingPaused = false; // backpressure: pauseReading()
  #readingStopped = false; // for good: FIN seen or closing
  #writing = false; // writable interest armed <=> output pending
  #outputFull = false; // reached high water, not yet back to low water
  #ignoredBytes = 0; // queued while #outputFull: writes that ignored backpressure
  #corked = false; // writes gather in the context's cork buffer until uncork()
  #corkLength = 0;
  #closeWhenDrained = false;
  #peerFinished = false; // FIN (or an error) seen: nothing more will arrive
  #lingering = false; // our FIN is sent; reading only to discard
  #lingerTimer: Timer | null = null;
  #hangupParked = false; // out of the interest list after a hang-up while paused
  #writableWaiters: (() => void)[] | null = null;
  #aborting = false; // abort(): an io_uring stream drops what it has not sent
  #files: FileSegment[] | null = null; // file ranges waiting, in order
  #filePending = 0; // their bytes still to send plus the bytes queued behind them

  /**
   * Wraps a connected socket; `open()` registers it.
   *
   * @param context the reactor, read buffer, counters and limits it shares
   * @param fd a connected nonblocking socket, now owned by this connection
   * @param protocol what its bytes are fed to
   * @param onClose called once after it closed (in the deferred phase)
   */
  constructor(
    context: ConnectionContext,
    fd: number,
    protocol: Protocol,
    onClose: CloseListener | null = null,
  ) {
    this.context = context;
    this.reactor = context.reactor;
    this.fd = fd;
    this.protocol = protocol;
    this.#limits = context.limits;
    this.#onClose = onClose;
  }

  /**
   * Registers with the reactor for reading and arms the timeouts (the
   * context's unless given; null: none).
   */
  open(timeouts: Timeouts | null = this.context.timeouts): void {
    const streams = this.context.streams;
    streams?.open(this.fd);
    try {
      this.reactor.register(this.fd, this, this.#interest());
    } catch (e) {
      streams?.abandon(this.fd); // the caller still owns the fd
      throw e;
    }
    this.lastRead = this.lastWrite = this.reactor.now;
    if (timeouts && (timeouts.idleMs > 0 || timeouts.requestMs > 0 || timeouts.writeMs > 0)) {
      // One timer for every kind, even when none is due yet (only a write
      // timeout, say): queued output pulls it in then.
      this.#timeouts = timeouts;
      const first = this.#nextDeadline(timeouts);
      this.#timer = this.reactor.setTimer(first - this.reactor.now, () => this.#checkTimeouts());
    }
  }

  /**
   * The deadline that applies now, and (in #dueKind) which timeout it is.
   * Deadlines only move later as the peer reads and writes, so activity
   * costs one field store and no heap work: the timer, when it fires,
   * recomputes and re-arms itself if not due.
   */
  #nextDeadline(t: Timeouts): number {
    if (this.#writing && t.writeMs > 0) {
      this.#dueKind = "write";
      return this.lastWrite + t.writeMs;
    }
    const started = this.protocol.requestStartedAt ? this.protocol.requestStartedAt() : -1;
    if (started >= 0) {
      this.#dueKind = "request";
      return t.requestMs > 0 ? started + t.requestMs : Infinity;
    }
    this.#dueKind = "idle";
    // Not reading because we paused it (the other side of a proxy is slow):
    // the wait is ours, not the peer's idleness.
    if (t.idleMs <= 0 || this.#readingPaused) return Infinity;
    if (this.protocol.busy && this.protocol.busy()) return Infinity;
    return Math.max(this.lastRead, this.lastWrite) + t.idleMs;
  }

  #checkTimeouts(): void {
    const t = this.#timeouts;
    if (this.fd < 0 || t === null || this.#timer === null) return;
    const now = this.reactor.now;
    const deadline = this.#nextDeadline(t);
    if (deadline > now) {
      // Not due: activity moved it. Check again then (Infinity when the kind
      // that applies now is off); a shorter kind that starts meanwhile (a
      // request left incomplete, output queued) pulls the timer earlier.
      this.reactor.resetTimer(this.#timer, deadline - now);
      return;
    }
    const kind = this.#dueKind;
    this.context.counters.timeouts++;
    log.debug("fd {fd}: {kind} timeout", { fd: this.fd, kind });
    try {
      if (this.protocol.timedOut) this.protocol.timedOut(this, kind);
      else this.close("timeout");
    } catch (error) {
      this.#protocolThrew(error);
      return;
    }
    if (this.fd >= 0) {
      // The protocol answered (e.g. 408) and closes after the flush; give the
      // flush one write timeout at most.
      this.reactor.resetTimer(this.#timer, t.writeMs > 0 ? t.writeMs : 1000);
      this.#timeouts = { idleMs: 0, requestMs: 0, writeMs: t.writeMs || 1000 };
    }
  }

  /**
   * Makes the timer fire no later than `deadline` (reactor ms). For the rare
   * moments a shorter timeout starts: a request left incomplete at the end
   * of a read, output queued on EAGAIN.
   */
  pullTimer(deadline: number): void {
    const timer = this.#timer;
    if (timer !== null && (!timer.active || timer.at > deadline)) {
      this.reactor.resetTimer(timer, Math.max(0, deadline - this.reactor.now));
    }
  }

  /** The timeouts this connection runs with, or null. */
  get timeouts(): Timeouts | null {
    return this.#timeouts;
  }

  /** Asks the protocol to finish in-flight work and close (graceful shutdown). */
  shutdown(): void {
    if (this.fd < 0) return;
    if (this.protocol.shutdown) this.protocol.shutdown(this);
    else this.closeAfterFlush();
  }

  /** Whether the connection is closed. */
  get closed(): boolean {
    return this.fd < 0;
  }

  /**
   * Whether the peer's FIN was seen (`Protocol.end` ran or, without one, the
   * close after the flush began): nothing more will arrive. A protocol that
   * takes the connection over later (an upgrade) learns it here.
   */
  get peerFinished(): boolean {
    return this.#peerFinished;
  }

  /** Whether reading is paused (`pauseReading`, or by default at high water). */
  get readingPaused(): boolean {
    return this.#readingPaused;
  }

  /** Whether the output reached high water and has not fallen to low water yet. */
  get outputFull(): boolean {
    return this.#outputFull;
  }

  #interest(): number {
    const reading = !this.#readingPaused && !this.#readingStopped;
    return (reading ? Interest.READABLE : 0) | (this.#writing ? Interest.WRITABLE : 0);
  }

  #updateInterest(): void {
    if (this.fd < 0) return;
    if (!this.#hangupParked) {
      this.reactor.reregister(this.fd, this.#interest());
    } else if (!this.#readingPaused) {
      this.#hangupParked = false;
      this.reactor.register(this.fd, this, this.#interest());
    }
  }

  /** Readiness from the reactor. */
  ready(ready: number): void {
    if (this.#lingering) {
      this.#discard();
      return;
    }
    if ((ready & Ready.WRITABLE) !== 0) {
      this.flush();
      if (this.fd < 0) return;
    }
    if ((ready & (READ_BITS | GONE_BITS)) === 0) return;
    if (this.#readingPaused || this.#readingStopped) {
      // Read bits are masked while not reading: only a hang-up or an error.
      if ((ready & GONE_BITS) === 0) return;
      if ((ready & Ready.ERROR) !== 0 || this.#readingStopped || this.#writing) {
        this.close("hangup");
        return;
      }
      // A hang-up (no error, nothing left for the peer) while paused: we shut
      // our writing half (a proxy passing on a half-close) and the peer sent
      // FIN. Its last bytes may still wait unread, and they are wanted (the
      // proxy forwards them once the other side drains). A hang-up cannot be
      // masked, so a level-triggered wait would report it again and again:
      // leave the interest list until reading resumes, then read to EOF.
      this.#hangupParked = true;
      this.context.counters.hangupParks++;
      this.reactor.deregister(this.fd);
      return;
    }
    this.#readable(ready);
  }

  /** Reads what the peer sent; `ready` is the event's bits (edge-triggered: a FIN or error in them means read to the end). */
  #readable(ready: number): void {
    const ctx = this.context;
    if (ctx.streams !== null) {
      this.#readStream(ctx.streams);
      return;
    }
    const buf = ctx.readBuffer;
    const ptr = ctx.readBufferPointer;
    const edge = this.reactor.edge;
    for (;;) {
      const n = recv_ptr(this.fd, ptr, buf.length, 0);
      if (n > 0) {
        ctx.counters.bytesIn += n;
        this.lastRead = this.reactor.now;
        this.protocol.data(this, buf, 0, n);
        // Level-triggered: one read per event is enough, the next wait says
        // whether more is there. Edge-triggered: drain or never hear of it;
        // a short read drained the socket (bytes that come after it raise a
        // new edge), unless this edge also brought the peer's FIN or an
        // error, which no later edge will repeat: then read on to see it.
        if (!edge || this.fd < 0 || this.#readingPaused || this.#readingStopped) return;
        if (n < buf.length && (ready & END_BITS) === 0) return;
        continue;
      }
      if (n === 0) {
        this.#peerEnded();
        return;
      }
      const e = errno();
      if (e === EAGAIN) return;
      if (e === EINTR) continue;
      log.debug("recv on fd {fd}: {code}", { fd: this.fd, code: errnoName(e) });
      this.close("reset");
      return;
    }
  }

  /** One read from an io_uring stream: bytes the kernel already received, no syscall. */
  #readStream(streams: IoUringStreams): void {
    const ctx = this.context;
    const n = streams.recv(this.fd, ctx.readBuffer.length);
    if (n > 0) {
      ctx.counters.bytesIn += n;
      this.lastRead = this.reactor.now;
      const start = streams.readStart;
      this.protocol.data(this, streams.buffers, start, start + n);
      return;
    }
    if (n === 0) {
      this.#peerEnded();
      return;
    }
    if (n === -EAGAIN) return;
    log.debug("recv on fd {fd}: {code}", { fd: this.fd, code: errnoName(-n) });
    this.close("reset");
  }

  #peerEnded(): void {
    this.#readingStopped = true;
    this.#peerFinished = true;
    if (this.protocol.end) {
      this.protocol.end(this);
      this.#updateInterest();
      return;
    }
    this.closeAfterFlush();
  }

  /**
   * Half-close: sends FIN after every byte written so far, and keeps
   * reading. Call it once the output is drained (`output.length` 0, e.g. in
   * `Protocol.drained`). Returns 0, or -errno (ENOTCONN: the peer is gone).
   * Use it rather than `shutdown(2)` on `fd`: on io_uring, bytes `write`
   * took may still be on their way to the kernel.
   */
  shutdownWrite(): number {
    if (this.fd < 0) return -EBADF;
    const streams = this.context.streams;
    if (streams !== null) return streams.shutdownWrite(this.fd);
    return shutdown(this.fd, SHUT_WR) < 0 ? -errno() : 0;
  }

  /** Stops reading, flushes what is pending, then closes. */
  closeAfterFlush(): void {
    if (this.fd < 0 || this.#lingering) return;
    this.uncork();
    if (this.fd < 0) return;
    this.#readingStopped = true;
    if (!this.#writing) {
      this.#finish();
      return;
    }
    this.#closeWhenDrained = true;
    this.#updateInterest();
  }

  /**
   * Everything is sent; close. If the peer may still be sending (pipelined
   * requests we will not answer, a request body), a plain close() with
   * unread bytes makes the kernel send RST, and an RST can destroy responses
   * the peer has not read yet. So: send FIN, then read and discard until the
   * peer closes, for `LINGER_MS` at most (a "lingering close", as Apache and
   * nginx do).
   */
  #finish(): void {
    if (this.#peerFinished) {
      this.close("eof");
      return;
    }
    if (this.shutdownWrite() < 0) {
      this.close("local");
      return;
    }
    this.#lingering = true;
    this.#readingStopped = false;
    this.#readingPaused = false;
    this.#updateInterest();
    this.#lingerTimer = this.reactor.setTimer(LINGER_MS, () => this.close("local"));
  }

  #discard(): void {
    const ctx = this.context;
    const streams = ctx.streams;
    if (streams !== null) {
      let n: number;
      while ((n = streams.recv(this.fd, ctx.readBuffer.length)) > 0);
      if (n !== -EAGAIN) this.close("local");
      return;
    }
    for (;;) {
      const n = recv_ptr(this.fd, ctx.readBufferPointer, ctx.readBuffer.length, 0);
      if (n > 0) continue;
      if (n === 0) {
        this.close("local");
        return;
      }
      const e = errno();
      if (e === EAGAIN) return;
      if (e !== EINTR) {
        this.close("local");
        return;
      }
    }
  }

  /**
   * Like `write(data, 0, length)` for a long-lived buffer whose address was
   * taken once (`Deno.UnsafePointer.of`): the send skips the typed-array
   * argument conversion. `data` is used only if bytes must be queued.
   *
   * @throws {RangeError} if `length` exceeds `data` (the kernel would read past it)
   */
  writeFrom(pointer: Deno.PointerObject, data: Uint8Array, length: number): boolean {
    // The kernel reads `length` bytes at `pointer`: never past the buffer.
    if (length > data.length) throw outOfRange(0, length, data);
    if (this.fd < 0) return false;
    if (length <= 0) return !this.#outputFull;
    // #writing <=> output pending (writable interest is armed exactly while
    // it is): one field of this object instead of a look into the buffer's.
    if (this.#writing) return this.#queue(data, 0, length);
    // Corked or on io_uring, the pointer is of no use: the general path.
    if (this.#corked || this.context.streams !== null) return this.write(data, 0, length);
    let n: number;
    do n = send_ptr(this.fd, pointer, length, MSG_NOSIGNAL); while (n < 0 && errno() === EINTR);
    return this.#sent(n < 0 ? -errno() : n, data, 0, length);
  }

  /**
   * Sends `data[start, end)`: straight to the socket when nothing is queued,
   * otherwise after what is. Any size is taken whole. Returns false when the
   * caller should stop writing until `Protocol.lowWater` (or
   * `whenWritable()`): the output reached its high-water mark, or the
   * connection is closed. Pass `start` 0 where you can: other offsets cost a
   * subarray.
   *
   * @throws {RangeError} if `[start, end)` leaves `data` (the kernel would read past it)
   */
  write(data: Uint8Array, start = 0, end: number = data.length): boolean {
    // The kernel reads what we point it at: never past the buffer.
    if (end > data.length || start < 0) throw outOfRange(start, end, data);
    if (this.fd < 0) return false;
    const len = end - start;
    if (len <= 0) return !this.#outputFull;
    if (this.#writing) return this.#queue(data, start, end);
    if (this.#corked) {
      if (this.#corkAppend(data, start, end)) return true;
      this.uncork(); // full: what gathered goes first, then this
      if (this.fd < 0) return false;
      if (this.#writing) return this.#queue(data, start, end);
    }
    const streams = this.context.streams;
    if (streams !== null) {
      return this.#sent(streams.send(this.fd, data, start, len), data, start, end);
    }
    const src = start === 0 ? data : data.subarray(start, end);
    let n: number;
    do n = send(this.fd, src, len, MSG_NOSIGNAL); while (n < 0 && errno() === EINTR);
    return this.#sent(n < 0 ? -errno() : n, data, start, end);
  }

  /**
   * After a direct send of `data[start, end)` returned `n` (bytes taken, or
   * -errno as an io_uring stream returns it): queue what is left.
   */
  #sent(n: number, data: Uint8Array, start: number, end: number): boolean {
    if (n < 0) {
      const e = -n;
      if (e !== EAGAIN) {
        log.debug("send on fd {fd}: {code}", { fd: this.fd, code: errnoName(e) });
        this.close("reset");
        return false;
      }
      n = 0;
    }
    const counters = this.context.counters;
    counters.bytesOut += n;
    if (n === end - start) return true;
    counters.sendEagain++;
    return this.#queue(data, start + n, end);
  }

  #queue(data: Uint8Array, start: number, end: number): boolean {
    const out = this.output;
    const limits = this.#limits;
    const counters = this.context.counters;
    if (this.#outputFull) {
      // Written after write() said stop: the writer ignores backpressure.
      // Tolerate up to maxOutputBytes of that; never buffer without bound.
      this.#ignoredBytes += end - start;
      if (this.#ignoredBytes > limits.maxOutputBytes) {
        log.warn(
          "fd {fd}: {ignored} bytes written past the high-water mark, {bytes} pending; closing",
          { fd: this.fd, ignored: this.#ignoredBytes, bytes: this.pendingBytes },
        );
        counters.overflows++;
        this.close("overflow");
        return false;
      }
    }
    const files = this.#files;
    if (files !== null) {
      const last = files[files.length - 1];
      (last.after ??= new OutputBuffer()).append(data, start, end);
      this.#filePending += end - start;
    } else {
      out.append(data, start, end);
    }
    return this.#queued();
  }

  /** Bytes waiting: the output buffer, file ranges not yet sent, and what waits behind them. */
  get pendingBytes(): number {
    return this.output.length + this.#filePending;
  }

  /**
   * Sends `length` bytes of `source` from `offset` by sendfile(2), after
   * anything already queued; writes made meanwhile go after it. What a
   * corked connection gathered (a response head) leaves first, flagged
   * MSG_MORE so the kernel joins it to the file's first bytes. `source` is
   * released once the range is sent or dropped. If the file ends before
   * `length` bytes (it shrank while being served), the connection is
   * aborted with RST: a response cut short must not look complete. Returns
   * false at the high-water mark (as `write`) or when closed.
   */
  sendFile(source: FileSource, offset: number, length: number): boolean {
    if (this.fd < 0) {
      source.release();
      return false;
    }
    if (length <= 0) {
      source.release();
      return !this.#outputFull;
    }
    if (this.#corked) {
      this.#uncork(MSG_MORE);
      if (this.fd < 0) {
        source.release();
        return false;
      }
    }
    const end = offset + length;
    if (!this.#writing) {
      const at = this.#sendFileNow(source, offset, end);
      if (at === end) {
        source.release();
        return true;
      }
      if (at < 0) {
        source.release();
        return false;
      }
      offset = at;
      this.context.counters.sendEagain++;
    }
    const segment: FileSegment = { source, offset, end, after: null };
    if (this.#files === null) this.#files = [segment];
    else this.#files.push(segment);
    this.#filePending += end - offset;
    return this.#queued();
  }

  /**
   * sendfile from `offset` until `end`, EAGAIN or failure. Returns the offset
   * reached (`end` when done), or -1 when the connection was closed (a send
   * error, or the file ended early: aborted).
   */
  #sendFileNow(source: FileSource, offset: number, end: number): number {
    const counters = this.context.counters;
    const streams = this.context.streams;
    if (streams !== null && streams.busy(this.fd)) {
      // Bytes before the file are still on their way: sendfile after them.
      streams.waitSocketWritable(this.fd);
      return offset;
    }
    while (offset < end) {
      const n = sendFileRange(this.fd, source.fd, offset, end - offset);
      if (n > 0) {
        offset += n;
        counters.bytesOut += n;
        counters.fileBytesOut += n;
        this.lastWrite = this.reactor.now;
        continue;
      }
      if (n === 0) {
        log.warn("fd {fd}: the file ended {missing} bytes early (changed while sent); reset", {
          fd: this.fd,
          missing: end - offset,
        });
        counters.fileTruncations++;
        this.abort("reset");
        return -1;
      }
      const e = errno();
      if (e === EAGAIN) {
        if (streams !== null) streams.waitSocketWritable(this.fd);
        return offset;
      }
      if (e === EINTR) continue;
      log.debug("sendfile on fd {fd}: {code}", { fd: this.fd, code: errnoName(e) });
      this.close("reset");
      return -1;
    }
    return offset;
  }

  /**
   * Bytes wait in the output buffer that `send` could not take: arm writable
   * interest (once) and apply the high-water mark.
   */
  #queued(): boolean {
    const out = this.output;
    const counters = this.context.counters;
    if (out.length > counters.peakOutputBytes) counters.peakOutputBytes = out.length;
    let changed = false;
    if (!this.#writing) {
      this.#writing = true;
      counters.writableArms++;
      changed = true;
      this.lastWrite = this.reactor.now;
      if (this.#timeouts !== null && this.#timeouts.writeMs > 0) {
        this.pullTimer(this.lastWrite + this.#timeouts.writeMs);
      }
    }
    const crossed = !this.#outputFull && this.pendingBytes >= this.#limits.highWaterMark;
    if (crossed) {
      this.#outputFull = true;
      counters.highWaterHits++;
      if (!this.protocol.highWater && !this.#readingPaused) {
        this.#readingPaused = true;
        counters.readPauses++;
        changed = true;
      }
    }
    if (changed) this.#updateInterest();
    if (crossed && this.protocol.highWater) this.protocol.highWater(this);
    return !this.#outputFull && this.fd >= 0;
  }

  /**
   * Holds writes back until `uncork()`: they gather in the context's shared
   * cork buffer and leave together in one `send` (the answers to one read of
   * pipelined requests, say). Writes behind a queue already waiting for
   * writable readiness, or too large for the cork buffer, are not held.
   */
  cork(): void {
    const ctx = this.context;
    if (ctx.corkOwner !== null || this.fd < 0) return; // one at a time
    ctx.corkOwner = this;
    this.#corked = true;
    this.#corkLength = 0;
  }

  /**
   * Room to write `n` bytes in place behind what this corked connection
   * gathered: the offset in `context.corkBuffer` where they may go. Write them
   * there, then `corkWritten(length)` takes them as written: no copy from
   * a scratch array into the cork buffer (a short response assembled
   * there). -1 when there is no such room (not corked, output already
   * queued, closed, or the buffer too full): `write` as usual.
   */
  corkRoom(n: number): number {
    if (!this.#corked || this.#writing || this.fd < 0) return -1;
    const at = this.#corkLength;
    return at + n <= this.context.corkBuffer.length ? at : -1;
  }

  /**
   * Takes `length` bytes written in place at `corkRoom`'s offset as written.
   *
   * @throws {RangeError} when not corked, or the bytes would leave the cork buffer
   */
  corkWritten(length: number): void {
    const end = this.#corkLength + length;
    if (!this.#corked || length < 0 || end > this.context.corkBuffer.length) {
      throw new RangeError(
        `corkWritten(${length}): ${this.#corked ? "past the cork buffer" : "not corked"}`,
      );
    }
    this.#corkLength = end;
  }

  /** Sends what was written since `cork()`, in one `send`. */
  uncork(): void {
    this.#uncork(0);
  }

  /** `uncork` with `flags` (MSG_MORE, or 0) added to the send's MSG_NOSIGNAL. */
  #uncork(flags: number): void {
    if (!this.#corked) return;
    this.#corked = false;
    const ctx = this.context;
    ctx.corkOwner = null;
    const len = this.#corkLength;
    this.#corkLength = 0;
    if (len === 0 || this.fd < 0) return;
    if (this.#writing) {
      this.#queue(ctx.corkBuffer, 0, len); // behind what already waits
      return;
    }
    if (ctx.streams !== null) {
      this.#sent(ctx.streams.send(this.fd, ctx.corkBuffer, 0, len), ctx.corkBuffer, 0, len);
      return;
    }
    let n: number;
    do n = send_ptr(this.fd, ctx.corkBufferPointer, len, flags | MSG_NOSIGNAL); while (
      n < 0 && errno() === EINTR
    );
    this.#sent(n < 0 ? -errno() : n, ctx.corkBuffer, 0, len);
  }

  /** Appends `data[start, end)` to the cork buffer if it fits; false if not. */
  #corkAppend(data: Uint8Array, start: number, end: number): boolean {
    const buf = this.context.corkBuffer;
    const at = this.#corkLength;
    const n = end - start;
    if (at + n > buf.length) return false;
    if (n <= 64) {
      for (let k = 0; k < n; k++) buf[at + k] = data[start + k];
    } else {
      buf.set(start === 0 && end === data.length ? data : data.subarray(start, end), at);
    }
    this.#corkLength = at + n;
    return true;
  }

  /** Sends what is pending (on writable readiness). */
  flush(): void {
    const out = this.output;
    const counters = this.context.counters;
    for (;;) {
      // Bytes before a file range (a response head) go out flagged MSG_MORE.
      if (!this.#flushBytes(this.#files !== null ? MSG_MORE : 0)) return; // closed
      if (out.length > 0 || this.#files === null) break; // EAGAIN, or all sent
      // The output buffer is empty: the first file range is next.
      const files = this.#files;
      const segment = files[0];
      const at = this.#sendFileNow(segment.source, segment.offset, segment.end);
      if (at < 0) return; // closed
      this.#filePending -= at - segment.offset;
      segment.offset = at;
      if (at < segment.end) {
        counters.sendEagain++;
        break;
      }
      segment.source.release();
      files.shift();
      if (files.length === 0) this.#files = null;
      const after = segment.after;
      if (after !== null) {
        // What was written behind the file is next: into the output buffer.
        this.#filePending -= after.length;
        out.append(after.pending(), 0, after.length);
      }
    }
    const pending = this.pendingBytes;
    let changed = false;
    if (pending === 0 && this.#writing) {
      this.#writing = false;
      counters.writableDisarms++;
      changed = true;
      if (this.#closeWhenDrained) {
        this.#finish();
        return;
      }
    }
    const relieved = this.#outputFull && pending <= this.#limits.lowWaterMark;
    if (relieved) {
      this.#outputFull = false;
      this.#ignoredBytes = 0;
      if (!this.protocol.lowWater && this.#readingPaused && !this.#readingStopped) {
        this.#readingPaused = false;
        this.lastRead = this.reactor.now;
        changed = true;
      }
    }
    if (changed) this.#updateInterest();
    if (relieved) {
      if (this.protocol.lowWater) this.protocol.lowWater(this);
      this.#wakeWriters();
      if (this.fd < 0) return;
    }
    if (pending === 0 && this.protocol.drained) this.protocol.drained(this);
  }

  /** Sends the output buffer until empty or EAGAIN; false if the connection closed. */
  #flushBytes(flags: number): boolean {
    const out = this.output;
    const counters = this.context.counters;
    while (out.length > 0) {
      const len = out.length;
      const streams = this.context.streams;
      let n: number;
      let e = 0;
      if (streams !== null) {
        n = streams.send(this.fd, out.pending(), 0, len);
        if (n < 0) e = -n;
      } else {
        n = send(this.fd, out.pending(), len, flags | MSG_NOSIGNAL);
        if (n < 0) e = errno();
      }
      if (n < 0) {
        if (e === EINTR) continue;
        if (e === EAGAIN) {
          counters.sendEagain++;
          return true;
        }
        log.debug("send on fd {fd}: {code}", { fd: this.fd, code: errnoName(e) });
        this.close("reset");
        return false;
      }
      counters.bytesOut += n;
      out.consume(n);
      this.lastWrite = this.reactor.now;
      if (n < len) {
        counters.sendEagain++;
        return true;
      }
    }
    return true;
  }

  /**
   * Resolves once a writer may go on: at once unless the output is at its
   * high-water mark, else when it falls to the low-water mark (or the
   * connection closes: check `closed`).
   */
  whenWritable(): Promise<void> {
    if (!this.#outputFull || this.fd < 0) return Promise.resolve();
    return new Promise((resolve) => (this.#writableWaiters ??= []).push(resolve));
  }

  #wakeWriters(): void {
    const waiters = this.#writableWaiters;
    if (waiters === null) return;
    this.#writableWaiters = null;
    for (const resolve of waiters) resolve();
  }

  /** Stops reading from the peer (backpressure from elsewhere, e.g. a proxy's other side). */
  pauseReading(): void {
    if (this.fd < 0 || this.#readingStopped || this.#readingPaused) return;
    this.#readingPaused = true;
    this.context.counters.readPauses++;
    this.#updateInterest();
  }

  /** Reads from the peer again after `pauseReading`; the idle clock restarts now. */
  resumeReading(): void {
    if (this.fd < 0 || this.#readingStopped || !this.#readingPaused) return;
    this.#readingPaused = false;
    this.lastRead = this.reactor.now;
    this.#updateInterest();
    const t = this.#timeouts;
    if (t !== null && t.idleMs > 0) this.pullTimer(this.lastRead + t.idleMs);
  }

  /** The reactor caught an exception from this connection's callbacks (and logged it). */
  crashed(error: unknown): void {
    this.#protocolThrew(error, false);
  }

  #protocolThrew(error: unknown, logIt = true): void {
    if (logIt) log.error("protocol on fd {fd} threw: {error}", { fd: this.fd, error });
    this.context.counters.protocolErrors++;
    this.close("error");
  }

  /**
   * Closes now with RST instead of FIN, dropping anything pending: for a
   * stream cut short, so the peer cannot take it for a complete one.
   */
  abort(reason: CloseReason = "reset"): void {
    if (this.fd < 0) return;
    resetOnClose(this.fd);
    this.#aborting = true;
    this.close(reason);
  }

  /**
   * Closes now, dropping anything pending. Idempotent. The protocol's
   * `closed` and the close listener run in the reactor's deferred phase.
   */
  close(reason: CloseReason = "local"): void {
    const fd = this.fd;
    if (fd < 0) return;
    this.fd = -1;
    if (this.#corked) {
      this.#corked = false;
      this.context.corkOwner = null;
    }
    if (this.#timer !== null) this.reactor.cancelTimer(this.#timer);
    if (this.#lingerTimer !== null) this.reactor.cancelTimer(this.#lingerTimer);
    this.reactor.deregister(fd);
    const streams = this.context.streams;
    if (streams !== null) streams.close(fd, this.#aborting);
    else close(fd);
    this.unsentAtClose = this.pendingBytes;
    this.output.clear();
    if (this.#files !== null) {
      for (const segment of this.#files) segment.source.release();
      this.#files = null;
      this.#filePending = 0;
    }
    this.context.counters.closed++;
    this.#closeReason = reason;
    this.reactor.defer(this);
  }

  /** The deferred half of `close`: tell the protocol and the owner. */
  runDeferred(): void {
    this.#wakeWriters();
    const reason = this.#closeReason;
    try {
      if (this.protocol.closed) this.protocol.closed(this, reason);
    } finally {
      if (this.#onClose) this.#onClose(this, reason);
    }
  }
}
