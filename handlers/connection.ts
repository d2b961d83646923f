/**
 * A TCP connection on the reactor: reads into the reactor's shared buffer,
 * writes straight to `send`, and keeps only what `send` could not take.
 *
 * - Read: level-triggered reads once per event; edge-triggered reads until
 *   EAGAIN. EOF, ECONNRESET, EPOLLHUP and EPOLLERR end the connection.
 * - Write: `send` at once. Only on a partial send or EAGAIN is the rest kept
 *   in the output buffer and EPOLLOUT armed; it is disarmed when the buffer
 *   drains (no LT writable storm).
 * - Backpressure: past `highWaterMark` pending bytes, reading from this peer
 *   pauses (EPOLLIN dropped); under `lowWaterMark` it resumes. Past
 *   `maxOutputBytes` the peer is not reading at all: the connection closes.
 * - Half-close: after the peer's FIN, pending output is flushed, then close.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  EPOLLRDHUP,
  MSG_NOSIGNAL,
  SHUT_WR,
} from "../syscalls/constants.ts";
import { EAGAIN, EINTR, errnoName } from "../syscalls/errno.ts";
import { close, errno, recv_ptr, send, send_ptr, shutdown } from "../syscalls/libc.ts";
import type { Handler, Reactor } from "../reactor/reactor.ts";
import type { Timer } from "../reactor/timers.ts";
import { OutputBuffer } from "./output_buffer.ts";

const log = getLogger(["reactor", "connection"]);

const READ_BITS = EPOLLIN | EPOLLRDHUP;
const GONE_BITS = EPOLLHUP | EPOLLERR;

/** Why a connection closed. */
export type CloseReason =
  | "eof" // the peer closed and everything was flushed
  | "reset" // ECONNRESET, EPIPE or another socket error
  | "hangup" // EPOLLHUP/EPOLLERR
  | "local" // our side decided (protocol, shutdown)
  | "overflow" // the peer does not read and the output cap was reached
  | "timeout" // a reactor timer expired
  | "shutdown"; // the server stopped before the connection finished

/** What a protocol (echo, http, proxy) implements to plug into a connection. */
export interface Protocol {
  /**
   * Bytes arrived: `data[start, end)`. `data` is the reactor's shared read
   * buffer, valid during this call only: copy what you keep.
   */
  data(conn: Connection, data: Uint8Array, start: number, end: number): void;
  /** The peer sent FIN. Without this method: flush what is pending, then close. */
  end?(conn: Connection): void;
  /** The output buffer drained after backpressure. */
  drained?(conn: Connection): void;
  /** The connection is closed; its fd is gone. */
  closed?(conn: Connection, reason: CloseReason): void;
  /**
   * When the request in progress began (reactor ms), or -1 between requests.
   * Drives the request (header) timeout; without this method only the idle
   * and write timeouts apply.
   */
  requestStartedAt?(): number;
  /**
   * The server is shutting down: finish what is in flight, then close.
   * Without this method: stop reading, flush, close.
   */
  shutdown?(conn: Connection): void;
  /** A timeout expired (`what` says which). Without this method: close. */
  timedOut?(conn: Connection, what: TimeoutKind): void;
}

/** Which timeout expired. */
export type TimeoutKind = "idle" | "request" | "write";

/** Connection timeouts in milliseconds; 0 turns one off. */
export interface Timeouts {
  /** No request in progress and nothing read for this long: close. */
  idleMs: number;
  /** A request (head, or body) not complete this long after its first byte. */
  requestMs: number;
  /** Output pending and not a byte accepted by the peer for this long. */
  writeMs: number;
}

/** Defaults: idle 60 s, request (header) 10 s, stalled write 30 s. */
export const DEFAULT_TIMEOUTS: Timeouts = { idleMs: 60_000, requestMs: 10_000, writeMs: 30_000 };

/** How long a closing connection keeps reading (and discarding) after its FIN. */
export const LINGER_MS = 2000;

/** Buffer limits of a connection. */
export interface ConnectionLimits {
  /** Pause reading from the peer when this many bytes are waiting to be sent. */
  highWaterMark: number;
  /** Resume reading when the pending bytes fall to this. */
  lowWaterMark: number;
  /** Close the connection rather than buffer more than this. */
  maxOutputBytes: number;
}

/** Defaults: pause at 1 MiB, resume at 256 KiB, close at 16 MiB. */
export const DEFAULT_LIMITS: ConnectionLimits = {
  highWaterMark: 1 << 20,
  lowWaterMark: 256 << 10,
  maxOutputBytes: 16 << 20,
};

/** One accepted (or connected) nonblocking TCP socket. */
export class Connection implements Handler {
  /** The socket. -1 once closed. */
  fd: number;
  /** The reactor this connection lives on. */
  readonly reactor: Reactor;
  /** The protocol fed with this connection's bytes. */
  protocol: Protocol;
  /** Bytes waiting for EPOLLOUT. */
  readonly output: OutputBuffer;
  /** Free for the protocol or the server (e.g. a slot in a connection list). */
  tag = 0;
  /** `reactor.now` when the peer's bytes last arrived (or when the connection opened). */
  lastRead = 0;
  /** `reactor.now` when the peer last took output bytes (or when output was first queued). */
  lastWrite = 0;
  #timeouts: Timeouts | null = null;
  #timer: Timer | null = null;
  #dueKind: TimeoutKind = "idle";
  readonly #limits: ConnectionLimits;
  readonly #onClose: ((conn: Connection, reason: CloseReason) => void) | null;
  #readingPaused = false; // by backpressure
  #readingStopped = false; // for good: FIN seen or the protocol stopped reading
  #writing = false; // EPOLLOUT armed
  #closeWhenDrained = false;
  #peerFinished = false; // FIN (or an error) seen: nothing more will arrive
  #lingering = false; // our FIN is sent; reading only to discard
  #lingerTimer: Timer | null = null;
  #hangupParked = false; // out of the interest list after EPOLLHUP while paused

  constructor(
    reactor: Reactor,
    fd: number,
    protocol: Protocol,
    limits: ConnectionLimits = DEFAULT_LIMITS,
    onClose: ((conn: Connection, reason: CloseReason) => void) | null = null,
  ) {
    this.reactor = reactor;
    this.fd = fd;
    this.protocol = protocol;
    this.#limits = limits;
    this.#onClose = onClose;
    this.output = new OutputBuffer(limits.maxOutputBytes);
  }

  /** Registers with the reactor for reading; arms the timeouts if given. */
  open(timeouts: Timeouts | null = null): void {
    this.reactor.register(this.fd, this, this.#interest());
    this.lastRead = this.lastWrite = this.reactor.now;
    const first = timeouts ? this.#nextDeadline(timeouts) : Infinity;
    if (timeouts && first < Infinity) {
      this.#timeouts = timeouts;
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
    if (this.output.length > 0 && t.writeMs > 0) {
      this.#dueKind = "write";
      return this.lastWrite + t.writeMs;
    }
    const started = this.protocol.requestStartedAt ? this.protocol.requestStartedAt() : -1;
    if (started >= 0) {
      this.#dueKind = "request";
      return t.requestMs > 0 ? started + t.requestMs : Infinity;
    }
    this.#dueKind = "idle";
    return t.idleMs > 0 ? this.lastRead + t.idleMs : Infinity;
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
    this.reactor.counters.timeouts++;
    log.debug("fd {fd}: {kind} timeout", { fd: this.fd, kind });
    if (this.protocol.timedOut) this.protocol.timedOut(this, kind);
    else this.close("timeout");
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

  /** Whether reading is paused by backpressure. */
  get readingPaused(): boolean {
    return this.#readingPaused;
  }

  #interest(): number {
    const reading = !this.#readingPaused && !this.#readingStopped;
    return (reading ? READ_BITS : 0) | (this.#writing ? EPOLLOUT : 0) | this.reactor.triggerBits;
  }

  #updateInterest(): void {
    if (this.fd < 0) return;
    if (!this.#hangupParked) {
      this.reactor.modify(this.fd, this.#interest());
    } else if (!this.#readingPaused) {
      this.#hangupParked = false;
      this.reactor.register(this.fd, this, this.#interest());
    }
  }

  ready(events: number): void {
    if (this.#lingering) {
      this.#discard();
      return;
    }
    if ((events & EPOLLOUT) !== 0) {
      this.flush();
      if (this.fd < 0) return;
    }
    if ((events & (READ_BITS | GONE_BITS)) === 0) return;
    if (this.#readingPaused || this.#readingStopped) {
      if ((events & GONE_BITS) === 0) return;
      if ((events & EPOLLERR) !== 0 || this.#readingStopped || this.output.length > 0) {
        this.close("hangup");
        return;
      }
      // EPOLLHUP (no error, nothing left for the peer) while paused: we shut
      // our writing half (a proxy passing on a half-close) and the peer sent
      // FIN. Its last bytes may still wait unread, and they are wanted (the
      // proxy forwards them once the other side drains). HUP cannot be
      // masked, so a level-triggered wait would report it again and again:
      // leave the interest list until reading resumes, then read to EOF.
      this.#hangupParked = true;
      this.reactor.counters.hangupParks++;
      this.reactor.unregister(this.fd);
      return;
    }
    this.#readable();
  }

  #readable(): void {
    const reactor = this.reactor;
    const buf = reactor.readBuffer;
    const ptr = reactor.readBufferPointer;
    const edge = reactor.edge;
    for (;;) {
      const n = recv_ptr(this.fd, ptr, buf.length, 0);
      if (n > 0) {
        reactor.counters.bytesIn += n;
        this.lastRead = reactor.now;
        this.protocol.data(this, buf, 0, n);
        // Level-triggered: one read per event is enough, the next wait says
        // whether more is there. Edge-triggered: drain or never hear of it.
        if (!edge || this.fd < 0 || this.#readingPaused || this.#readingStopped) return;
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

  #peerEnded(): void {
    this.#readingStopped = true;
    this.#peerFinished = true;
    if (this.protocol.end) {
      this.protocol.end(this);
      if (this.fd < 0) return;
      this.#updateInterest();
      return;
    }
    this.closeAfterFlush();
  }

  /** Stops reading, flushes what is pending, then closes. */
  closeAfterFlush(): void {
    if (this.fd < 0 || this.#lingering) return;
    this.#readingStopped = true;
    if (this.output.length === 0) {
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
    if (shutdown(this.fd, SHUT_WR) < 0) {
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
    const reactor = this.reactor;
    for (;;) {
      const n = recv_ptr(this.fd, reactor.readBufferPointer, reactor.readBuffer.length, 0);
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
   */
  writeFrom(pointer: Deno.PointerObject, data: Uint8Array, length: number): boolean {
    if (this.fd < 0) return false;
    if (length <= 0) return true;
    // #writing <=> output pending (EPOLLOUT is armed exactly while it is):
    // one field of this object instead of a look into the buffer's.
    if (this.#writing) return this.#queue(data, 0, length);
    let n: number;
    do n = send_ptr(this.fd, pointer, length, MSG_NOSIGNAL); while (n < 0 && errno() === EINTR);
    return this.#sent(n, data, 0, length);
  }

  /**
   * Sends `data[start, end)`: straight to the socket when nothing is queued,
   * otherwise after what is. Returns false if the connection is (now) closed.
   * Pass `start` 0 where you can: other offsets cost a subarray.
   */
  write(data: Uint8Array, start = 0, end = data.length): boolean {
    if (this.fd < 0) return false;
    const len = end - start;
    if (len <= 0) return true;
    if (this.#writing) return this.#queue(data, start, end);
    const src = start === 0 ? data : data.subarray(start, end);
    let n: number;
    do n = send(this.fd, src, len, MSG_NOSIGNAL); while (n < 0 && errno() === EINTR);
    return this.#sent(n, data, start, end);
  }

  /** After a direct send of `data[start, end)` returned `n`: queue what is left. */
  #sent(n: number, data: Uint8Array, start: number, end: number): boolean {
    if (n < 0) {
      const e = errno(); // still the send's: nothing ran in between
      if (e !== EAGAIN) {
        log.debug("send on fd {fd}: {code}", { fd: this.fd, code: errnoName(e) });
        this.close("reset");
        return false;
      }
      n = 0;
    }
    const counters = this.reactor.counters;
    counters.bytesOut += n;
    if (n === end - start) return true;
    counters.sendEagain++;
    return this.#queue(data, start + n, end);
  }

  #queue(data: Uint8Array, start: number, end: number): boolean {
    if (!this.output.append(data, start, end)) {
      log.warn("fd {fd}: peer is not reading; {bytes} bytes pending, closing", {
        fd: this.fd,
        bytes: this.output.length,
      });
      this.reactor.counters.overflows++;
      this.close("overflow");
      return false;
    }
    const counters = this.reactor.counters;
    if (this.output.length > counters.peakOutputBytes) {
      counters.peakOutputBytes = this.output.length;
    }
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
    if (!this.#readingPaused && this.output.length >= this.#limits.highWaterMark) {
      this.#readingPaused = true;
      counters.readPauses++;
      changed = true;
    }
    if (changed) this.#updateInterest();
    return true;
  }

  /** Sends what is pending (called on EPOLLOUT). */
  flush(): void {
    const out = this.output;
    const counters = this.reactor.counters;
    while (out.length > 0) {
      const len = out.length;
      const n = send(this.fd, out.pending(), len, MSG_NOSIGNAL);
      if (n < 0) {
        const e = errno();
        if (e === EINTR) continue;
        if (e === EAGAIN) {
          counters.sendEagain++;
          break;
        }
        log.debug("send on fd {fd}: {code}", { fd: this.fd, code: errnoName(e) });
        this.close("reset");
        return;
      }
      counters.bytesOut += n;
      out.consume(n);
      this.lastWrite = this.reactor.now;
      if (n < len) {
        counters.sendEagain++;
        break;
      }
    }
    let changed = false;
    if (out.length === 0 && this.#writing) {
      this.#writing = false;
      counters.writableDisarms++;
      changed = true;
      if (this.#closeWhenDrained) {
        this.#finish();
        return;
      }
    }
    if (this.#readingPaused && out.length <= this.#limits.lowWaterMark) {
      this.#readingPaused = false;
      changed = true;
    }
    if (changed) this.#updateInterest();
    if (out.length === 0 && this.protocol.drained) this.protocol.drained(this);
  }

  /** Pauses or resumes reading from the peer on the protocol's behalf (e.g. a proxy). */
  setReading(on: boolean): void {
    if (this.fd < 0 || this.#readingStopped) return;
    if (this.#readingPaused === !on) return;
    this.#readingPaused = !on;
    if (!on) this.reactor.counters.readPauses++;
    this.#updateInterest();
  }

  crashed(error: unknown): void {
    log.error("protocol error on fd {fd}: {error}", { fd: this.fd, error });
    this.close("local");
  }

  /** Closes now, dropping anything pending. Idempotent. */
  close(reason: CloseReason = "local"): void {
    const fd = this.fd;
    if (fd < 0) return;
    this.fd = -1;
    if (this.#timer !== null) this.reactor.cancelTimer(this.#timer);
    if (this.#lingerTimer !== null) this.reactor.cancelTimer(this.#lingerTimer);
    this.reactor.unregister(fd);
    close(fd);
    this.output.clear();
    this.reactor.counters.closed++;
    if (this.protocol.closed) this.protocol.closed(this, reason);
    if (this.#onClose) this.#onClose(this, reason);
  }
}
