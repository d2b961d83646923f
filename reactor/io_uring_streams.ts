/**
 * Completion-based stream I/O on the io_uring backend: the kernel receives
 * and sends, we are told when it is done (the proactor model), behind the
 * same readiness contract the rest of the server already speaks.
 *
 * A stream fd (a connected TCP socket opened with `open`) behaves like a
 * socket whose kernel buffers are ours:
 *
 * - **Receive**: one multishot `IORING_OP_RECV` per fd, armed while the fd
 *   has readable interest, takes buffers from a provided-buffer ring
 *   (`IORING_REGISTER_PBUF_RING`): bytes arrive with no submission per read.
 *   Each completion's chunk waits on the fd until `recv` hands it out; the
 *   fd is reported READABLE while chunks (or its EOF or error) wait:
 *   level-triggered, as the backend contract says. A chunk's buffer goes
 *   back to the ring at the next wait, after the handler that read it
 *   returned. When the ring runs dry the kernel ends the recv with ENOBUFS;
 *   it is re-armed once buffers are back.
 * - **Send**: `send` copies into the fd's staging buffer and returns the
 *   bytes taken, -EAGAIN when it is full. Before the next wait the staged
 *   bytes become the one `IORING_OP_SEND` in flight for the fd, batched into
 *   the same `io_uring_enter` that waits. A buffer in flight is never
 *   touched until its completion; a short send resubmits the rest first.
 *   The fd is reported WRITABLE while staging room is free.
 * - **Accept**: a listener opened with `openListener` has one multishot
 *   `IORING_OP_ACCEPT`; the connections it makes wait on the listener until
 *   `accept` hands them out (READABLE while some wait).
 * - **Close**: bytes taken are delivered, as the kernel would after
 *   `close(2)`: the fd is closed once its sends complete (at most
 *   `DRAIN_MS` later, then cut). An abort shuts the socket down at once,
 *   which ends a send in flight. The fd number stays ours until its last
 *   completion, so it is never reused under a request in flight; `user_data`
 *   carries a generation number as well, and a completion for a closed
 *   stream is dropped (its buffer given back).
 *
 * @module
 */

import { getLogger } from "../log/mod.ts";
import {
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  EPOLLRDHUP,
  MSG_NOSIGNAL,
  SHUT_RDWR,
  SHUT_WR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
} from "../syscalls/constants.ts";
import { EAGAIN, ECANCELED, ENOBUFS, EPIPE } from "../syscalls/errno.ts";
import {
  addressOf,
  IORING_CQE_BUFFER_SHIFT,
  IORING_CQE_F_BUFFER,
  IORING_CQE_F_MORE,
  IOSQE_CQE_SKIP_SUCCESS,
  type IoUring,
  mapAnonymous,
  ProvidedBufferRing,
  unmapAnonymous,
} from "../syscalls/io_uring.ts";
import { close, errno, shutdown } from "../syscalls/libc.ts";
import { resetOnClose } from "../syscalls/socket.ts";
import { grown, sizeFor } from "./fd_table.ts";

const log = getLogger(["reactor", "io_uring"]);

/** `user_data` high word: kind in the top 4 bits, generation or sequence below. */
export const KIND_SHIFT = 28;
/** A multishot recv. */
export const KIND_RECV = 1;
/** A send. */
export const KIND_SEND = 2;
/** A cancellation (its failure, if any, is ignored). */
export const KIND_IGNORE = 3;
/** A one-shot POLLOUT: the socket itself is writable (for sendfile behind the stream). */
export const KIND_POLLOUT = 4;

/** A multishot accept on a listener. */
export const KIND_ACCEPT = 5;
/** For the fds a multishot accept makes. */
const ACCEPT_FLAGS = SOCK_NONBLOCK | SOCK_CLOEXEC;
/** The low 28 bits of the high word: a generation or a sequence number. */
export const GEN_MASK = (1 << KIND_SHIFT) - 1;
/** `user_data` high word of requests whose completion is dropped unread (cancellations, NOPs). */
export const IGNORE_HI = (KIND_IGNORE << KIND_SHIFT) >>> 0;
/** The buffer group id of the provided-buffer ring. */
const BGID = 1;
/**
 * Received chunks a stream may hold unread before its recv is cancelled
 * (re-armed once they are read): bytes beyond stay in the socket, where TCP
 * flow control holds the peer back, and one connection that is not read
 * (backpressure) cannot take the whole buffer ring from the others.
 */
export const MAX_HELD_CHUNKS = 4;
/** Free send buffers kept for reuse (32 MiB at the default size); more are left to the GC. */
export const MAX_POOLED_SEND_BUFFERS = 1024;
/** How long a closed stream may take to deliver the bytes it took before it is cut. */
export const DRAIN_MS = 5000;

/** Sizes of a stream set's buffers. */
export interface StreamBufferOptions {
  /** Provided buffers in the ring (a power of two, at most 32768). Default 1024. */
  count?: number;
  /** Bytes per provided buffer. Default 16 KiB. */
  size?: number;
  /**
   * Staging bytes per send buffer; an fd has two (one in flight, one
   * filling), taken from a pool only while bytes wait. Default 32 KiB.
   */
  sendSize?: number;
}

/** Counters of the stream layer. */
export class StreamCounters {
  /** Recv completions carrying bytes. */
  recvs = 0;
  /** Connections a multishot accept made. */
  accepts = 0;
  /** Send submissions. */
  sends = 0;
  /** Sends the kernel completed short (the rest was resubmitted). */
  shortSends = 0;
  /** Times a multishot recv ended for lack of buffers (ENOBUFS) and waited for some. */
  bufferStarvations = 0;
}

class SendBuffer {
  readonly bytes: Uint8Array;
  readonly address: number;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.address = addressOf(Deno.UnsafePointer.of(this.bytes)!);
  }
}

const CLOSE_NONE = 0;
const CLOSE_SHUT_WR = 1; // shutdown(SHUT_WR) once the bytes taken are sent
const CLOSE_FD = 2; // close(fd) once the bytes taken are sent

/** Completion-based streams on one ring. See the module doc. */
export class IoUringStreams {
  /** The provided buffers: bytes `recv` reports are in here, at `readStart`. */
  readonly buffers: Uint8Array;
  /** Where the bytes of the last successful `recv` start in `buffers`. */
  readStart = 0;
  /** Counters. */
  readonly counters: StreamCounters = new StreamCounters();
  /**
   * Called when work is queued that only the next wait submits (bytes to
   * send, a close): the backend ends a parked wait with it, so a write made
   * from a promise while the loop is idle goes out at once.
   */
  onQueued: () => void = () => {};
  readonly #ring: IoUring;
  readonly #bufferSize: number;
  readonly #bufferCount: number;
  readonly #buffersAddress: number;
  readonly #buffersPointer: Deno.PointerObject;
  readonly #bufRing: ProvidedBufferRing;
  /** Buffers handed to us by completions and not yet given back. */
  #held = 0;
  /** Buffer ids to give back at the next wait (their bytes were read). */
  #toReturn: number[] = [];
  readonly #sendSize: number;
  readonly #pool: SendBuffer[] = [];

  // Per fd.
  #gen = new Uint32Array(1024);
  #open = new Uint8Array(1024);
  #events = new Int32Array(1024); // interest bits while registered, -1 when not
  #recvArmed = new Uint8Array(1024);
  #chunks: number[][] = []; // [bid, start, length, ...]
  #chunkHead = new Int32Array(1024);
  #end = new Int32Array(1024); // 1: EOF received; < 0: -errno of the receive side
  #sendError = new Int32Array(1024); // -errno of a failed send
  #flying: (SendBuffer | null)[] = [];
  #next: (SendBuffer | null)[] = [];
  #flyOff = new Int32Array(1024);
  #flyLen = new Int32Array(1024);
  #nextLen = new Int32Array(1024);
  #sending = new Uint8Array(1024);
  #closing = new Uint8Array(1024);
  /** 1: a listener (its queue holds accepted fds, its "recv" is a multishot accept). */
  #listener = new Uint8Array(1024);
  /** 1: the caller waits for the socket itself to be writable; 2: armed; 3: it is. */
  #socketOut = new Uint8Array(1024);
  #closeBy = new Float64Array(1024);

  // Work lists.
  #ready: number[] = [];
  #inReady = new Uint8Array(1024);
  #toArm: number[] = [];
  #inArm = new Uint8Array(1024);
  /** Its recv ended with ENOBUFS: re-armed only while buffers are free for it. */
  #starved = new Uint8Array(1024);
  #toSend: number[] = [];
  #draining: number[] = [];
  /** Fds whose POLLOUT found no SQ slot (`#socketOut` stays 1): armed by `prepare`. */
  #toPollOut: number[] = [];
  /** Work found no SQ slot since the last `prepare` began; it retries it. */
  #deferred = false;

  /**
   * Registers a provided-buffer ring with `ring`.
   *
   * @throws {SyscallError} when the kernel refuses it (before 5.19)
   */
  constructor(ring: IoUring, options: StreamBufferOptions = {}) {
    this.#ring = ring;
    this.#bufferCount = options.count ?? 1024;
    this.#bufferSize = options.size ?? 16384;
    this.#sendSize = options.sendSize ?? 32768;
    const data = mapAnonymous(this.#bufferCount * this.#bufferSize);
    this.buffers = data.bytes;
    this.#buffersPointer = data.pointer;
    this.#buffersAddress = addressOf(data.pointer);
    try {
      this.#bufRing = new ProvidedBufferRing(ring, this.#bufferCount, BGID);
    } catch (e) {
      this.#unmapBuffers();
      throw e;
    }
    for (let bid = 0; bid < this.#bufferCount; bid++) this.#give(bid);
    this.#bufRing.publish();
  }

  #unmapBuffers(): void {
    unmapAnonymous(this.#buffersPointer, this.#bufferCount * this.#bufferSize);
  }

  /** Releases the buffers (after the ring is closed). */
  release(): void {
    this.#unmapBuffers();
    this.#bufRing.release();
  }

  /** Puts buffer `bid` at the buffer ring's tail (published by `prepare`). */
  #give(bid: number): void {
    this.#bufRing.add(this.#buffersAddress + bid * this.#bufferSize, this.#bufferSize, bid);
  }

  #ensure(fd: number): void {
    if (fd < this.#gen.length) return;
    const size = sizeFor(this.#gen.length, fd);
    this.#gen = grown(this.#gen, size);
    this.#open = grown(this.#open, size);
    this.#events = grown(this.#events, size);
    this.#recvArmed = grown(this.#recvArmed, size);
    this.#chunkHead = grown(this.#chunkHead, size);
    this.#end = grown(this.#end, size);
    this.#sendError = grown(this.#sendError, size);
    this.#flyOff = grown(this.#flyOff, size);
    this.#flyLen = grown(this.#flyLen, size);
    this.#nextLen = grown(this.#nextLen, size);
    this.#sending = grown(this.#sending, size);
    this.#closing = grown(this.#closing, size);
    this.#closeBy = grown(this.#closeBy, size);
    this.#listener = grown(this.#listener, size);
    this.#socketOut = grown(this.#socketOut, size);
    this.#inReady = grown(this.#inReady, size);
    this.#inArm = grown(this.#inArm, size);
    this.#starved = grown(this.#starved, size);
  }

  /** A new generation for `fd`: completions still posted for the previous one are stale. */
  #newGeneration(fd: number): void {
    this.#gen[fd] = ((this.#gen[fd] + 1) & GEN_MASK) || 1;
  }

  /** Whether `fd` is an open stream. */
  isStream(fd: number): boolean {
    return fd < this.#open.length && this.#open[fd] === 1;
  }

  /**
   * Makes `fd` (a connected nonblocking socket) a stream; register it with
   * the reactor afterwards. Its I/O then goes through `recv`, `send`,
   * `shutdownWrite` and `close` here.
   */
  open(fd: number): void {
    this.#ensure(fd);
    if (this.#open[fd] !== 0 || this.#closing[fd] !== CLOSE_NONE) {
      throw new Error(`io_uring stream: fd ${fd} is already open`);
    }
    this.#newGeneration(fd);
    this.#open[fd] = 1;
    this.#events[fd] = -1;
    this.#recvArmed[fd] = 0;
    this.#end[fd] = 0;
    this.#sendError[fd] = 0;
    this.#flyOff[fd] = this.#flyLen[fd] = this.#nextLen[fd] = 0;
    this.#sending[fd] = 0;
    this.#listener[fd] = 0;
    this.#socketOut[fd] = 0;
    this.#starved[fd] = 0;
    this.#chunkHead[fd] = 0;
    const chunks = this.#chunks[fd];
    if (chunks === undefined) {
      while (this.#chunks.length <= fd) this.#chunks.push([]);
    } else chunks.length = 0;
  }

  /**
   * Makes the listening socket `fd` accept by completion: one multishot
   * `IORING_OP_ACCEPT` while it has readable interest; the fds it makes wait
   * here, and `accept` hands them out (READABLE is reported while some wait).
   * Register it with the reactor afterwards; `closeListener` before closing it.
   */
  openListener(fd: number): void {
    this.open(fd);
    this.#listener[fd] = 1;
  }

  /**
   * The next connection a listener's multishot accept made (nonblocking,
   * close-on-exec), -EAGAIN when none waits, or the -errno the accept failed
   * with (reported once; the accept is armed again on the next interest).
   */
  accept(fd: number): number {
    const queue = this.#chunks[fd];
    const head = this.#chunkHead[fd];
    if (head < queue.length) {
      const conn = queue[head];
      if (head + 1 === queue.length) {
        queue.length = 0;
        this.#chunkHead[fd] = 0;
      } else this.#chunkHead[fd] = head + 1;
      return conn;
    }
    const end = this.#end[fd];
    if (end < 0) {
      this.#end[fd] = 0;
      this.#wantArm(fd);
      return end;
    }
    return -EAGAIN;
  }

  /** The listener goes away: its accept is cancelled, connections not taken are closed. */
  closeListener(fd: number): void {
    if (!this.isStream(fd) || this.#listener[fd] === 0) return;
    this.#cancelRecv(fd);
    const queue = this.#chunks[fd];
    for (let i = this.#chunkHead[fd]; i < queue.length; i++) close(queue[i]);
    queue.length = 0;
    this.#chunkHead[fd] = 0;
    this.#open[fd] = 0;
    this.#listener[fd] = 0;
    this.#newGeneration(fd);
    this.onQueued();
  }

  /** Forgets `fd` without closing it (its registration failed; the caller closes it). */
  abandon(fd: number): void {
    this.#open[fd] = 0;
    this.#newGeneration(fd);
  }

  // ---- the backend side: interest, arming, completions, readiness ----

  /** The reactor registered `fd` (a stream) with event bits. */
  add(fd: number, events: number): void {
    this.#events[fd] = events;
    this.#wantArm(fd);
    this.#markReady(fd);
  }

  /** The interest changed. */
  modify(fd: number, events: number): void {
    const had = this.#events[fd];
    this.#events[fd] = events;
    if ((events & EPOLLIN) === 0 && (had & EPOLLIN) !== 0) this.#cancelRecv(fd);
    else this.#wantArm(fd);
    this.#markReady(fd);
  }

  /** The reactor deregistered `fd`: no reports, no receiving; what waits stays. */
  remove(fd: number): void {
    this.#events[fd] = -1;
    this.#cancelRecv(fd);
    this.#cancelPollOut(fd);
  }

  /**
   * A POLLOUT armed for `fd` holds a reference to the socket: close(2) would
   * free the number but not the socket (no FIN, its send queue kept) until
   * the peer reads. Cancel it.
   */
  #cancelPollOut(fd: number): void {
    if (this.#socketOut[fd] !== 2) return;
    this.#cancel(fd, KIND_POLLOUT);
    this.#socketOut[fd] = 0;
  }

  #wantArm(fd: number): void {
    if (
      (this.#events[fd] & EPOLLIN) !== 0 && this.#recvArmed[fd] === 0 && this.#end[fd] === 0 &&
      this.#inArm[fd] === 0
    ) {
      this.#inArm[fd] = 1;
      this.#toArm.push(fd);
    }
  }

  #markReady(fd: number): void {
    if (this.#inReady[fd] === 0) {
      this.#inReady[fd] = 1;
      this.#ready.push(fd);
    }
  }

  /** The `user_data` high word of `fd`'s requests of `kind` (the low word is `fd`). */
  #userHi(fd: number, kind: number): number {
    return ((kind << KIND_SHIFT) | this.#gen[fd]) >>> 0;
  }

  /** Arms `fd`'s multishot recv (accept, for a listener); false when the SQ has no slot. */
  #armRecv(fd: number): boolean {
    const ring = this.#ring;
    const queued = this.#listener[fd] !== 0
      ? ring.prepAcceptMultishot(fd, ACCEPT_FLAGS, fd, this.#userHi(fd, KIND_ACCEPT))
      : ring.prepRecvMultishot(fd, BGID, fd, this.#userHi(fd, KIND_RECV));
    if (queued) this.#recvArmed[fd] = 1;
    return queued;
  }

  /**
   * Cancels `fd`'s request of `kind` (of its current generation). Never
   * lost: a multishot recv (or a POLLOUT) holds its own reference to the
   * socket, and the ring keeps a cancel that finds no SQ slot (`IoUring`).
   */
  #cancel(fd: number, kind: number): void {
    this.#ring.prepCancel(fd, this.#userHi(fd, kind), 0, IGNORE_HI, IOSQE_CQE_SKIP_SUCCESS);
  }

  #cancelRecv(fd: number): void {
    if (this.#recvArmed[fd] === 0) return;
    this.#cancel(fd, this.#listener[fd] !== 0 ? KIND_ACCEPT : KIND_RECV);
    // Completions already posted still come (and are kept); no more after the cancel.
    this.#recvArmed[fd] = 0;
  }

  /**
   * Submits the rest of `fd`'s flying buffer (from `#flyOff` to `#flyLen`);
   * false when the SQ has no slot: the rest then waits, unsent and not in
   * flight, and `prepare` submits it before anything staged after it.
   */
  #submitSend(fd: number): boolean {
    const off = this.#flyOff[fd];
    if (
      !this.#ring.prepSend(
        fd,
        this.#flying[fd]!.address + off,
        this.#flyLen[fd] - off,
        MSG_NOSIGNAL,
        fd,
        this.#userHi(fd, KIND_SEND),
      )
    ) return false;
    this.#sending[fd] = 1;
    this.counters.sends++;
    return true;
  }

  /**
   * Before a wait: give buffers back, then queue the POLLOUTs that waited
   * for an SQ slot, arm receives, submit staged sends, enforce drains. With
   * no SQ slot (see `IoUring`) the rest stays in its list for the next call:
   * nothing is dropped (and the ring writes a cancel that waits first).
   */
  prepare(): void {
    this.#deferred = false;
    const back = this.#toReturn;
    if (back.length > 0) {
      for (let i = 0; i < back.length; i++) this.#give(back[i]);
      this.#held -= back.length;
      back.length = 0;
      this.#bufRing.publish();
    }
    let room = this.#toPollOut.length === 0 || this.#retryPollOuts();
    const arm = this.#toArm;
    if (arm.length > 0) {
      let kept = 0;
      // A starved recv re-armed with no buffer free fails again at once:
      // one per free buffer per turn.
      let free = this.#bufferCount - this.#held;
      for (let i = 0; i < arm.length; i++) {
        const fd = arm[i];
        this.#inArm[fd] = 0;
        if (
          this.#open[fd] !== 1 || (this.#events[fd] & EPOLLIN) === 0 ||
          this.#recvArmed[fd] !== 0 || this.#end[fd] !== 0
        ) continue;
        const starved = this.#starved[fd] !== 0;
        if (starved && free <= 0) {
          this.#inArm[fd] = 1;
          arm[kept++] = fd; // wait for buffers to come back
          continue;
        }
        if (!room || !this.#armRecv(fd)) {
          room = false;
          this.#inArm[fd] = 1;
          arm[kept++] = fd; // no SQ slot: next turn
          continue;
        }
        if (starved) {
          free--;
          this.#starved[fd] = 0;
        }
      }
      arm.length = kept;
    }
    const send = this.#toSend;
    if (send.length > 0) {
      let kept = 0;
      for (let i = 0; i < send.length; i++) {
        const fd = send[i];
        if (this.#sending[fd] !== 0) continue;
        if (this.#flyOff[fd] < this.#flyLen[fd]) {
          // A rest that found no slot (after a short send, or below) goes
          // first; what is staged follows at its completion.
          if (this.#sendError[fd] !== 0) continue;
          if (!room || !this.#submitSend(fd)) {
            room = false;
            send[kept++] = fd;
          }
          continue;
        }
        if (this.#nextLen[fd] === 0) continue;
        if (!room) {
          send[kept++] = fd;
          continue;
        }
        // The staged bytes go in flight; the other buffer stages from now on.
        const flying = this.#next[fd];
        this.#next[fd] = this.#flying[fd];
        this.#flying[fd] = flying;
        this.#flyOff[fd] = 0;
        this.#flyLen[fd] = this.#nextLen[fd];
        this.#nextLen[fd] = 0;
        if (!this.#submitSend(fd)) {
          room = false;
          send[kept++] = fd; // the flying buffer waits whole, as a rest (above)
        }
      }
      send.length = kept;
    }
    if (!room) this.#deferred = true;
    if (this.#draining.length > 0) this.#checkDrains();
  }

  /** Arms the POLLOUTs that found no SQ slot and are still wanted; whether all went. */
  #retryPollOuts(): boolean {
    const list = this.#toPollOut;
    let kept = 0;
    let room = true;
    for (let i = 0; i < list.length; i++) {
      const fd = list[i];
      if (this.#open[fd] !== 1 || this.#socketOut[fd] !== 1 || this.busy(fd)) continue;
      if (room && this.#tryPollOut(fd)) continue;
      room = false;
      list[kept++] = fd;
    }
    list.length = kept;
    return room;
  }

  /**
   * Work found no SQ slot since the last `prepare` began (see `IoUring`):
   * the next `prepare` retries it, so the loop must not sleep waiting for a
   * completion that may never come.
   */
  get hasDeferred(): boolean {
    return this.#deferred;
  }

  /** Whether a result is due without waiting (a ready fd, or a starved recv with buffers back). */
  get hasReady(): boolean {
    return this.#ready.length > 0;
  }

  /**
   * A completion of kind RECV or SEND (the backend read `user_data`).
   * Stale ones (an earlier generation of the fd) only give their buffer back.
   */
  complete(fd: number, kind: number, gen: number, res: number, flags: number): void {
    const current = fd < this.#gen.length && this.#gen[fd] === gen;
    if (kind === KIND_RECV) {
      const hasBuffer = (flags & IORING_CQE_F_BUFFER) !== 0;
      if (hasBuffer) this.#held++;
      const bid = flags >>> IORING_CQE_BUFFER_SHIFT;
      if (!current || this.#open[fd] !== 1) {
        if (hasBuffer) this.#toReturn.push(bid);
        return;
      }
      const more = (flags & IORING_CQE_F_MORE) !== 0;
      if (!more) this.#recvArmed[fd] = 0;
      if (res > 0 && hasBuffer) {
        this.counters.recvs++;
        this.#chunks[fd].push(bid, bid * this.#bufferSize, res);
      } else if (hasBuffer) {
        this.#toReturn.push(bid);
      }
      const holdingTooMuch = this.#chunks[fd].length - this.#chunkHead[fd] >= MAX_HELD_CHUNKS * 3;
      if (holdingTooMuch && more && res > 0 && hasBuffer) this.#cancelRecv(fd);
      if (res === 0) this.#end[fd] = 1;
      else if (res === -ENOBUFS) {
        this.counters.bufferStarvations++;
        this.#starved[fd] = 1;
        this.#wantArm(fd);
      } else if (res < 0 && res !== -ECANCELED) this.#end[fd] = res;
      else if (!more && !holdingTooMuch) {
        // Ended (not for holding too much: then recv() re-arms once it is read).
        this.#wantArm(fd);
      }
      this.#markReady(fd);
      return;
    }
    if (kind === KIND_ACCEPT) {
      if (!current || this.#open[fd] !== 1 || this.#listener[fd] === 0) {
        if (res >= 0) close(res); // for a listener gone: nobody will take it
        return;
      }
      if ((flags & IORING_CQE_F_MORE) === 0) this.#recvArmed[fd] = 0;
      if (res >= 0) {
        this.counters.accepts++;
        this.#chunks[fd].push(res);
        this.#wantArm(fd);
      } else if (res !== -ECANCELED) {
        this.#end[fd] = res; // EMFILE and the like: the Acceptor decides
      }
      this.#markReady(fd);
      return;
    }
    if (kind === KIND_POLLOUT) {
      if (current && this.#socketOut[fd] === 2) {
        this.#socketOut[fd] = 3;
        this.#markReady(fd);
      }
      return;
    }
    // KIND_SEND: the fd is still ours (it is closed only after its sends).
    if (!current) return;
    this.#sending[fd] = 0;
    if (res < 0) {
      this.#sendError[fd] = res;
      this.#flyLen[fd] = this.#flyOff[fd] = this.#nextLen[fd] = 0;
    } else {
      const off = this.#flyOff[fd] + res;
      if (off < this.#flyLen[fd] && this.#sendError[fd] === 0) {
        this.counters.shortSends++;
        this.#flyOff[fd] = off;
        // The rest first, then what was staged meanwhile; no slot: `prepare` sends it.
        if (!this.#submitSend(fd)) {
          this.#toSend.push(fd);
          this.#deferred = true;
        }
        return;
      }
      this.#flyLen[fd] = this.#flyOff[fd] = 0;
      if (this.#nextLen[fd] > 0 && this.#sendError[fd] === 0) this.#toSend.push(fd);
    }
    if (this.#closing[fd] !== CLOSE_NONE) {
      this.#afterSends(fd);
      return;
    }
    if (this.#flyLen[fd] === 0 && this.#nextLen[fd] === 0) {
      this.#releaseSendBuffers(fd);
      if (this.#socketOut[fd] === 1) this.#armPollOut(fd);
    }
    this.#markReady(fd);
  }

  /**
   * Appends the results for ready streams (level-triggered) through `emit`;
   * returns how many. Fds with nothing to report leave the list.
   */
  collect(emit: (fd: number, events: number) => boolean): number {
    const ready = this.#ready;
    let n = 0;
    let kept = 0;
    let i = 0;
    for (; i < ready.length; i++) {
      const fd = ready[i];
      const want = this.#events[fd];
      if (this.#open[fd] !== 1 || want < 0) {
        this.#inReady[fd] = 0;
        continue;
      }
      const ev = this.#readiness(fd);
      const masked = ev & (want | EPOLLERR | EPOLLHUP);
      if (masked === 0) {
        this.#inReady[fd] = 0;
        continue;
      }
      ready[kept++] = fd; // level-triggered: looked at again next time
      if ((masked & EPOLLOUT) !== 0 && this.#socketOut[fd] === 3) this.#socketOut[fd] = 0;
      if (!emit(fd, masked)) {
        i++;
        break; // the results array is full
      }
      n++;
    }
    for (; i < ready.length; i++) ready[kept++] = ready[i];
    ready.length = kept;
    return n;
  }

  #readiness(fd: number): number {
    if (this.#listener[fd] !== 0) {
      return this.#chunkHead[fd] < this.#chunks[fd].length || this.#end[fd] < 0 ? EPOLLIN : 0;
    }
    let ev = 0;
    const end = this.#end[fd];
    if (this.#chunkHead[fd] < this.#chunks[fd].length || end !== 0) ev |= EPOLLIN;
    if (end === 1) ev |= EPOLLRDHUP;
    if (end < 0 || this.#sendError[fd] < 0) ev |= EPOLLERR | EPOLLIN;
    else if (this.#socketOut[fd] !== 0) {
      if (this.#socketOut[fd] === 3) ev |= EPOLLOUT;
    } else if (this.#nextLen[fd] < this.#sendSize) ev |= EPOLLOUT;
    return ev;
  }

  // ---- the connection side ----

  /**
   * The next received bytes of `fd`: returns their length (they are in
   * `buffers` from `readStart`, valid until the next wait), 0 at EOF,
   * -EAGAIN when nothing waits, or -errno.
   */
  recv(fd: number, max: number): number {
    const chunks = this.#chunks[fd];
    let head = this.#chunkHead[fd];
    if (head < chunks.length) {
      const start = chunks[head + 1];
      const len = chunks[head + 2];
      this.readStart = start;
      if (len > max) {
        chunks[head + 1] = start + max;
        chunks[head + 2] = len - max;
        return max;
      }
      this.#toReturn.push(chunks[head]);
      head += 3;
      if (head === chunks.length) {
        chunks.length = 0;
        head = 0;
        // Cancelled for holding too much (or ended by ENOBUFS): receive again.
        if (this.#recvArmed[fd] === 0) this.#wantArm(fd);
      }
      this.#chunkHead[fd] = head;
      return len;
    }
    const end = this.#end[fd];
    if (end === 1) return 0;
    if (end < 0) return end;
    return -EAGAIN;
  }

  /**
   * Takes up to `length` bytes of `data` from `start` for `fd`: returns how
   * many (they will be sent, in order), -EAGAIN when the staging buffer is
   * full, or -errno of an earlier failed send.
   */
  send(fd: number, data: Uint8Array, start: number, length: number): number {
    const err = this.#sendError[fd];
    if (err < 0) return err;
    let next = this.#next[fd];
    if (next === undefined || next === null) {
      next = this.#take();
      // Both grown by push, never written past their end (that would turn
      // them into slow dictionary-mode arrays for good).
      while (this.#next.length <= fd) this.#next.push(null);
      while (this.#flying.length <= fd) this.#flying.push(null);
      this.#next[fd] = next;
    }
    const at = this.#nextLen[fd];
    const n = Math.min(this.#sendSize - at, length);
    if (n <= 0) return -EAGAIN;
    const dst = next.bytes;
    if (n <= 64) {
      for (let k = 0; k < n; k++) dst[at + k] = data[start + k];
    } else {
      dst.set(
        start === 0 && n === data.length ? data : data.subarray(start, start + n),
        at,
      );
    }
    if (at === 0) {
      this.#toSend.push(fd);
      this.onQueued();
    }
    this.#nextLen[fd] = at + n;
    return n;
  }

  #take(): SendBuffer {
    return this.#pool.pop() ?? new SendBuffer(this.#sendSize);
  }

  #releaseSendBuffers(fd: number): void {
    const a = this.#flying[fd];
    const b = this.#next[fd];
    // The pool keeps what a busy moment needed, up to a bound; the rest is garbage.
    if (a && this.#pool.length < MAX_POOLED_SEND_BUFFERS) this.#pool.push(a);
    if (b && this.#pool.length < MAX_POOLED_SEND_BUFFERS) this.#pool.push(b);
    if (a !== undefined) this.#flying[fd] = null;
    if (b !== undefined) this.#next[fd] = null;
  }

  /**
   * Whether bytes taken for `fd` are still on their way: a caller that
   * writes to the socket directly (sendfile) must wait until they are not.
   */
  busy(fd: number): boolean {
    // unsent: also a rest that waits for an SQ slot, not in flight.
    return this.#sending[fd] !== 0 || this.unsent(fd) !== 0;
  }

  /**
   * The caller wrote to the socket directly and hit EAGAIN (or waits for
   * `busy` to end): report `fd` WRITABLE only once the stream is drained and
   * the socket itself can take bytes (a one-shot POLLOUT), not when staging
   * room is free. Ends at that report.
   */
  waitSocketWritable(fd: number): void {
    if (this.#socketOut[fd] !== 0) return;
    this.#socketOut[fd] = 1;
    if (!this.busy(fd)) this.#armPollOut(fd);
  }

  #armPollOut(fd: number): void {
    this.onQueued(); // a parked wait must submit it
    // (Never ahead of a cancel waiting for a slot: the ring writes those first.)
    if (this.#tryPollOut(fd)) return;
    this.#socketOut[fd] = 1; // wanted, not armed: `prepare` arms it
    this.#toPollOut.push(fd);
    this.#deferred = true;
  }

  /** Queues a one-shot POLLOUT for `fd`; false when the SQ has no slot. */
  #tryPollOut(fd: number): boolean {
    if (!this.#ring.prepPollAdd(fd, EPOLLOUT, fd, this.#userHi(fd, KIND_POLLOUT))) return false;
    this.#socketOut[fd] = 2;
    return true;
  }

  /** Bytes taken for `fd` and not yet completed by the kernel. */
  unsent(fd: number): number {
    return (this.#flyLen[fd] - this.#flyOff[fd]) + this.#nextLen[fd];
  }

  /** `shutdown(fd, SHUT_WR)` once the bytes taken are sent. Returns -errno or 0. */
  shutdownWrite(fd: number): number {
    this.onQueued();
    if (!this.busy(fd)) {
      return shutdown(fd, SHUT_WR) < 0 ? -errno() : 0;
    }
    this.#closing[fd] = CLOSE_SHUT_WR;
    this.#closeBy[fd] = performance.now() + DRAIN_MS;
    this.#draining.push(fd);
    return 0;
  }

  /**
   * Closes the stream: what waits to be read is dropped; bytes taken are
   * delivered first (within `DRAIN_MS`) unless `abort`, which shuts the
   * socket down at once. The fd is closed when no send is in flight.
   */
  close(fd: number, abort = false): void {
    if (!this.isStream(fd)) return;
    this.onQueued();
    this.#open[fd] = 0;
    this.#events[fd] = -1;
    this.#cancelRecv(fd);
    this.#cancelPollOut(fd);
    const chunks = this.#chunks[fd];
    for (let i = this.#chunkHead[fd]; i < chunks.length; i += 3) this.#toReturn.push(chunks[i]);
    chunks.length = 0;
    this.#chunkHead[fd] = 0;
    const pending = this.busy(fd);
    if (!pending || this.#sendError[fd] < 0) {
      if (this.#sending[fd] !== 0) {
        this.#closing[fd] = CLOSE_FD;
        shutdown(fd, SHUT_RDWR); // ends the send in flight; closed at its completion
        return;
      }
      this.#finishClose(fd);
      return;
    }
    this.#closing[fd] = CLOSE_FD;
    if (abort) {
      this.#cut(fd);
      return;
    }
    this.#closeBy[fd] = performance.now() + DRAIN_MS;
    this.#draining.push(fd);
  }

  /** A send of a closing stream completed. */
  #afterSends(fd: number): void {
    if (this.#sending[fd] !== 0 || (this.unsent(fd) > 0 && this.#sendError[fd] === 0)) return;
    const how = this.#closing[fd];
    if (how === CLOSE_SHUT_WR) {
      this.#closing[fd] = CLOSE_NONE;
      if (this.#sendError[fd] === 0) shutdown(fd, SHUT_WR);
      this.#releaseSendBuffers(fd);
      this.#markReady(fd);
      return;
    }
    this.#finishClose(fd);
  }

  #finishClose(fd: number): void {
    this.#closing[fd] = CLOSE_NONE;
    this.#releaseSendBuffers(fd);
    this.#flyLen[fd] = this.#flyOff[fd] = this.#nextLen[fd] = 0;
    this.#newGeneration(fd);
    close(fd);
  }

  #checkDrains(): void {
    const now = performance.now();
    const list = this.#draining;
    let kept = 0;
    for (let i = 0; i < list.length; i++) {
      const fd = list[i];
      if (this.#closing[fd] === CLOSE_NONE) continue;
      if (now < this.#closeBy[fd]) {
        list[kept++] = fd;
        continue;
      }
      log.debug("fd {fd}: {bytes} bytes not taken by the peer in {ms} ms; cutting", {
        fd,
        bytes: this.unsent(fd),
        ms: DRAIN_MS,
      });
      this.#cut(fd);
    }
    list.length = kept;
  }

  /** Whether closed streams still have bytes on their way (their fds are still open). */
  closing(): boolean {
    const c = this.#closing;
    for (let fd = 0; fd < c.length; fd++) if (c[fd] === CLOSE_FD) return true;
    return false;
  }

  /** Closes the fds of closed streams whose bytes did not all go (the ring is going away). */
  closeRemaining(): void {
    const c = this.#closing;
    for (let fd = 0; fd < c.length; fd++) {
      if (c[fd] !== CLOSE_FD) continue;
      c[fd] = CLOSE_NONE;
      log.debug("fd {fd}: {bytes} bytes not delivered before the ring closed", {
        fd,
        bytes: this.unsent(fd),
      });
      close(fd);
    }
  }

  /** Drops what was not sent; a send in flight is ended by shutting the socket down. */
  #cut(fd: number): void {
    this.#sendError[fd] = -EPIPE;
    this.#nextLen[fd] = 0;
    // RST, never FIN: bytes that will not be delivered must not let the
    // stream look complete. (shutdown(SHUT_RDWR) here sent a FIN at once
    // when the socket's queue happened to be empty.)
    resetOnClose(fd);
    if (this.#sending[fd] !== 0) {
      this.#cancel(fd, KIND_SEND); // closed at the send's completion
      this.onQueued();
    } else this.#afterSends(fd);
  }
}
