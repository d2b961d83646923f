/**
 * The io_uring backend: readiness through `IORING_OP_POLL_ADD`, one
 * `io_uring_enter` (submit and wait) per loop turn.
 *
 * ## Level-triggered from one-shot polls
 * Each registered fd has one poll request in flight. A one-shot POLL_ADD
 * checks the fd when it is armed (`vfs_poll`), so one armed on an fd that is
 * still readable completes at once: re-arming every fd reported in the last
 * batch, at the next wait, gives exactly the level-triggered contract of
 * `backend.ts`, and the re-arm SQEs travel in the same `io_uring_enter` as
 * the wait. A multishot poll would not: it posts a completion per wake-up
 * (new bytes arriving), not while the condition holds, i.e. edge-triggered.
 * ERR, HUP and RDHUP are reported whatever the mask, as by epoll.
 *
 * ## Stale completions
 * `user_data` holds the fd (low word) and the sequence number of the poll
 * (high word). Removing or changing an fd cancels its poll
 * (`IORING_OP_POLL_REMOVE`) and forgets its number, so a completion that
 * was already posted for it, even for an fd number since closed and reused,
 * is recognised and dropped when read. Until the removal reaches the kernel
 * (the next `io_uring_enter`, within the same loop turn) the poll keeps a
 * reference to the socket: a closed socket is released then.
 *
 * ## Waits
 * `wait` is one `io_uring_enter(to_submit, min_complete 1, GETEVENTS |
 * EXT_ARG)` with the timeout (min_complete `BATCH_SIZE` with a
 * `min_wait_usec` under `batchWaitUs`). The ring is set up with SINGLE_ISSUER |
 * DEFER_TASKRUN where the kernel takes them (6.1+): completion work then
 * runs only inside our own `io_uring_enter`, no interrupt of the JS thread.
 * That ring can only be waited on by the thread that submits, so the parked
 * wait (`waitBlocking`, on Deno's thread pool) is a `poll(2)` on an eventfd
 * registered with the ring (IORING_REGISTER_EVENTFD), which the kernel
 * signals when completion work is queued; the JS thread then enters once to
 * run and reap it. (The ring fd itself reports POLLIN then, but nothing
 * wakes a poller sleeping on it: checked on 6.18.) The eventfd is switched
 * off (IORING_CQ_EVENTFD_DISABLED) except around a parked wait, so a busy
 * loop pays nothing for it. Without DEFER_TASKRUN the pool thread waits in
 * `io_uring_enter` itself.
 *
 * Changes made while a wait is parked are SQEs not yet submitted, so the
 * Reactor wakes the wait (`changesNeedWake`) to apply them.
 *
 * ## No SQ slot
 * When the SQ stays full even after a submit (the kernel refused the whole
 * call; see `IoUring`), nothing is dropped: an arm waits in state TO_ARM, a
 * poll removal waits in the ring (which never refuses one), and the streams
 * keep theirs (`IoUringStreams`); the next wait retries them, and does not
 * sleep while any wait.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { getLogger } from "../log/mod.ts";
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EPOLLERR,
  EPOLLET,
  EPOLLHUP,
  EPOLLONESHOT,
  POLLIN,
} from "../syscalls/constants.ts";
import {
  EAGAIN,
  EBADF,
  EBUSY,
  EEXIST,
  EINTR,
  ENOENT,
  ETIME,
  SyscallError,
} from "../syscalls/errno.ts";
import {
  CQE_FLAGS,
  CQE_RES,
  CQE_USER_DATA_HI,
  CQE_USER_DATA_LO,
  explainSetupFailure,
  IORING_FEAT_EXT_ARG,
  IORING_FEAT_NODROP,
  IORING_OP_POLL_ADD,
  IORING_OP_POLL_REMOVE,
  IORING_REGISTER_EVENTFD,
  IOSQE_CQE_SKIP_SUCCESS,
  IoUring,
  PREFERRED_FLAGS,
  probeIoUring,
} from "../syscalls/io_uring.ts";
import { close, errno, eventfd, poll_blocking, read, write } from "../syscalls/libc.ts";
import type { Backend } from "./backend.ts";
import { EpollBackend } from "./epoll.ts";
import { grown, sizeFor } from "./fd_table.ts";
import {
  GEN_MASK,
  IGNORE_HI,
  IoUringStreams,
  KIND_IGNORE,
  KIND_SHIFT,
  type StreamBufferOptions,
} from "./io_uring_streams.ts";

const log = getLogger(["reactor", "io_uring"]);

/** Not registered. */
const UNUSED = 0;
/** A poll is in flight for the fd. */
const ARMED = 1;
/** Reported in the last batch: re-armed at the next wait. */
const REPORTED = 2;
/** A completion-based stream (`IoUringStreams`): no poll, readiness from its state. */
const STREAM = 3;
/** Its poll found no SQ slot (see `IoUring`): armed at the next loop turn. */
const TO_ARM = 4;
/** What a failed poll (a bad fd) is reported as, like poll(2)'s POLLNVAL in the poll backend. */
const FAILED = EPOLLERR | EPOLLHUP;

/** How long `drain()` lets closed streams deliver what they took, by default. */
export const CLOSE_DRAIN_MS = 1000;

/** io_uring cannot be used here; the message says why in one line. */
export class IoUringUnavailableError extends Error {
  /**
   * Makes the error.
   *
   * @param reason why io_uring cannot be used, in one line
   */
  constructor(reason: string) {
    super(reason);
    this.name = "IoUringUnavailableError";
  }
}

/** Settings of an `IoUringBackend`. */
export interface IoUringBackendOptions {
  /** SQ entries (a power of two). Default 1024. */
  sqEntries?: number;
  /** CQ entries (a power of two). Default 4096. */
  cqEntries?: number;
  /** Ask for SINGLE_ISSUER | DEFER_TASKRUN (falls back when refused). Default true. */
  deferTaskrun?: boolean;
  /**
   * Completion-based streams (`streams`): the buffers of the provided-buffer
   * ring, or false for readiness only. Default: the defaults of
   * `StreamBufferOptions`.
   */
  streams?: StreamBufferOptions | false;
  /**
   * Batched waits: each wait on the JS thread returns once
   * `BATCH_SIZE` completions are there, or after this many µs once
   * there is one (0: off, the default). Under load the loop runs fewer,
   * fuller turns; each turn may start up to this much later. Needs 6.12
   * (`IORING_FEAT_MIN_TIMEOUT`); on an older kernel the backend does not
   * batch (`batchWaitUs` stays undefined) and a Reactor sleeps instead. The
   * Reactor sets this from its own `batchWaitUs` (given here instead, it is
   * taken as that, the older spelling).
   */
  batchWaitUs?: number;
  /**
   * Whether a batched wait is the kernel's (`min_wait_usec`) where the
   * kernel has it. false: the Reactor sleeps before a wait instead, as it
   * does on a kernel before 6.12; for comparing the two, and for testing
   * that path on a new kernel. Default true.
   */
  kernelBatching?: boolean;
}

/** io_uring POLL_ADD readiness behind the `Backend` interface. */
export class IoUringBackend implements Backend {
  readonly name = "io_uring" as const;
  readonly supportsEdge = false;
  readonly changesNeedWake = true;
  /** The ring. */
  readonly ring: IoUring;
  /** Whether completion work runs only in our own `io_uring_enter` (DEFER_TASKRUN). */
  readonly deferTaskrun: boolean;
  /**
   * The batched wait the kernel does, in µs (see `batchWaitUs`); undefined
   * when none was asked for, or the kernel has no `min_wait_usec` (then the
   * Reactor does it by sleeping before a wait, as on epoll).
   */
  readonly batchWaitUs?: number;
  /**
   * Completion-based I/O for connected sockets (multishot recv into a
   * provided-buffer ring, sends as SQEs), or null when not set up.
   */
  readonly streams: IoUringStreams | null = null;
  readonly #maxEvents: number;
  readonly #resultFd: Int32Array;
  readonly #resultEvents: Int32Array;
  readonly #resultToken: Uint32Array;
  /** Fds reported in the last batch, re-armed at the next wait. */
  readonly #rearm: Int32Array;
  #rearmCount = 0;
  #state = new Uint8Array(1024);
  #events = new Int32Array(1024);
  #tokens = new Uint32Array(1024);
  #seqs = new Uint32Array(1024);
  #nextSeq = 1;
  /** Fds in state TO_ARM (their arm found no SQ slot), in order. */
  readonly #armLater: number[] = [];
  /** The eventfd a DEFER_TASKRUN ring signals while a wait is parked (-1: none). */
  readonly #eventfd: number = -1;
  /** `struct pollfd` for it. */
  readonly #pollfd = new Uint8Array(8);
  readonly #eventfdBuffer = new Uint8Array(8);
  readonly #one = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]);
  readonly #emit = (fd: number, events: number): boolean => this.#push(fd, events);
  #count = 0;
  /** CQEs the last reap took. */
  #consumed = 0;
  /** A `waitBlocking` is in progress. */
  #parked = false;

  /**
   * Sets up the ring.
   *
   * @param maxEvents results per wait (the epoll_wait maxevents of this backend)
   * @throws {IoUringUnavailableError} when io_uring cannot be set up here
   */
  constructor(maxEvents: number, options: IoUringBackendOptions = {}) {
    const probe = probeIoUring();
    if (!probe.ok) throw new IoUringUnavailableError(probe.reason);
    const missing = [];
    if ((probe.features & IORING_FEAT_EXT_ARG) === 0) missing.push("IORING_FEAT_EXT_ARG (5.11)");
    if ((probe.features & IORING_FEAT_NODROP) === 0) missing.push("IORING_FEAT_NODROP (5.5)");
    if (!probe.ops.has(IORING_OP_POLL_ADD) || !probe.ops.has(IORING_OP_POLL_REMOVE)) {
      missing.push("IORING_OP_POLL_ADD/POLL_REMOVE");
    }
    if (missing.length > 0) {
      throw new IoUringUnavailableError(`this kernel's io_uring lacks ${missing.join(", ")}`);
    }
    const defer = (options.deferTaskrun ?? true) && probe.deferTaskrun;
    const entries = options.sqEntries ?? 1024;
    try {
      this.ring = IoUring.setup({
        entries,
        cqEntries: options.cqEntries ?? entries * 4,
        flags: defer ? PREFERRED_FLAGS : 0,
      });
    } catch (e) {
      throw new IoUringUnavailableError(explainSetupFailure(e));
    }
    this.deferTaskrun = defer;
    const batchWaitUs = options.batchWaitUs ?? 0;
    if (batchWaitUs > 0 && options.kernelBatching !== false) {
      // Until the Reactor registers fds (setBatchTarget), one completion ends a wait.
      if (this.ring.setBatchedWait(1, batchWaitUs)) {
        this.batchWaitUs = batchWaitUs;
      } else {
        log.info("batched waits by sleeping: this kernel's io_uring has no min_wait_usec (6.12)");
      }
    }
    this.#maxEvents = maxEvents;
    this.#resultFd = new Int32Array(maxEvents);
    this.#resultEvents = new Int32Array(maxEvents);
    this.#resultToken = new Uint32Array(maxEvents);
    this.#rearm = new Int32Array(maxEvents);
    if (defer) {
      this.#eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      const arg = new Uint8Array(new Int32Array([this.#eventfd]).buffer);
      if (this.#eventfd < 0 || this.ring.register(IORING_REGISTER_EVENTFD, arg, 1) < 0) {
        const e = new SyscallError("io_uring_register(EVENTFD)", errno());
        if (this.#eventfd >= 0) close(this.#eventfd);
        this.ring.close();
        throw e;
      }
      this.ring.eventfdEnabled(false);
      const v = new DataView(this.#pollfd.buffer);
      v.setInt32(0, this.#eventfd, true);
      v.setInt16(4, POLLIN, true);
    }
    if (options.streams !== false) {
      try {
        this.streams = new IoUringStreams(this.ring, options.streams ?? {});
        this.streams.onQueued = () => {
          if (this.#parked) this.wakeParked();
        };
      } catch (e) {
        log.info("io_uring: readiness only, no provided-buffer ring: {error}", {
          error: (e as Error).message,
        });
      }
    }
  }

  #ensure(fd: number): void {
    if (fd < this.#state.length) return;
    const size = sizeFor(this.#state.length, fd);
    this.#state = grown(this.#state, size);
    this.#events = grown(this.#events, size);
    this.#tokens = grown(this.#tokens, size);
    this.#seqs = grown(this.#seqs, size);
  }

  #checkBits(events: number): void {
    if ((events & (EPOLLET | EPOLLONESHOT)) !== 0) {
      throw new Error(
        "io_uring is level-triggered only: EPOLLET/EPOLLONESHOT need the epoll backend",
      );
    }
  }

  /** Submits a NOP now (its completion, ignored, ends a parked `io_uring_enter`). */
  #nop(): void {
    // No slot (the kernel refused a submit, see `IoUring`): the NOP is
    // skipped. If that was EBUSY (5.x: an overflowed CQ), the CQ holds
    // completions, and a parked enter (min_complete 1) does not sleep on
    // those; an EAGAIN (no memory) passes, and the next change wakes again.
    if (this.ring.prepNop(0, IGNORE_HI)) this.ring.submit();
  }

  /**
   * Queues a one-shot POLL_ADD for `fd` under a new sequence number; false
   * when the SQ has no slot (see `IoUring`), nothing changed then.
   */
  #tryArm(fd: number): boolean {
    const seq = this.#nextSeq;
    // user_data: fd | seq << 32.
    if (!this.ring.prepPollAdd(fd, this.#events[fd], fd, seq)) return false;
    this.#nextSeq = ((seq + 1) & GEN_MASK) || 1;
    this.#seqs[fd] = seq;
    this.#state[fd] = ARMED;
    return true;
  }

  /** Arms `fd` now, or (no SQ slot) at the next loop turn. Returns whether now. */
  #arm(fd: number): boolean {
    if (this.#tryArm(fd)) return true;
    this.#armLaterFd(fd);
    return false;
  }

  /** `fd` (with no poll in flight) waits in state TO_ARM: armed at the next loop turn. */
  #armLaterFd(fd: number): void {
    this.#seqs[fd] = 0;
    this.#state[fd] = TO_ARM;
    this.#armLater.push(fd);
  }

  /**
   * Queues the removal of `fd`'s poll in flight; its completion, if any, is
   * then stale. Never lost: the ring keeps a removal that finds no SQ slot
   * (until it goes, the poll holds a reference to the socket).
   */
  #cancel(fd: number): void {
    const seq = this.#seqs[fd];
    this.#seqs[fd] = 0;
    // user_data 0: a failure (ENOENT: it had completed already) is ignored.
    this.ring.prepPollRemove(fd, seq, 0, 0, IOSQE_CQE_SKIP_SUCCESS);
  }

  /** Retries the arms that found no SQ slot, in order; stops at the first refused. */
  #retryArms(): void {
    const arms = this.#armLater;
    const state = this.#state;
    let k = 0;
    // One not in state TO_ARM was removed (or armed) since: nothing to do.
    while (k < arms.length && (state[arms[k]] !== TO_ARM || this.#tryArm(arms[k]))) k++;
    arms.copyWithin(0, k);
    arms.length -= k;
  }

  /** Whether work waits for an SQ slot (here or in the streams): the loop must not sleep on it. */
  #deferred(): boolean {
    return this.#armLater.length !== 0 || this.ring.hasPendingCancels ||
      (this.streams !== null && this.streams.hasDeferred);
  }

  add(fd: number, events: number, token: number): void {
    this.#checkBits(events);
    if (fd < 0) throw new SyscallError("io_uring poll", EBADF, `ADD fd ${fd}`);
    this.#ensure(fd);
    if (this.#state[fd] !== UNUSED) throw new SyscallError("io_uring poll", EEXIST, `ADD fd ${fd}`);
    this.#events[fd] = events;
    this.#tokens[fd] = token;
    const streams = this.streams;
    if (streams !== null && streams.isStream(fd)) {
      this.#state[fd] = STREAM;
      streams.add(fd, events);
    } else {
      this.#arm(fd);
    }
  }

  modify(fd: number, events: number, token: number): void {
    this.#checkBits(events);
    const state = fd < this.#state.length ? this.#state[fd] : UNUSED;
    if (state === UNUSED) throw new SyscallError("io_uring poll", ENOENT, `MOD fd ${fd}`);
    this.#tokens[fd] = token;
    if (this.#events[fd] === events) return;
    this.#events[fd] = events;
    if (state === STREAM) {
      this.streams!.modify(fd, events);
      return;
    }
    // Reported and not re-armed yet: the re-arm takes the new mask.
    if (state === ARMED) {
      this.#cancel(fd);
      this.#arm(fd);
    }
  }

  remove(fd: number): void {
    const state = fd < this.#state.length ? this.#state[fd] : UNUSED;
    if (state === UNUSED) throw new SyscallError("io_uring poll", ENOENT, `DEL fd ${fd}`);
    if (state === ARMED) this.#cancel(fd);
    else if (state === STREAM) this.streams!.remove(fd);
    this.#seqs[fd] = 0;
    this.#state[fd] = UNUSED;
  }

  /** A batched wait returns once this many completions are there (or after `batchWaitUs`). */
  setBatchTarget(completions: number): void {
    if (this.batchWaitUs !== undefined) this.ring.setMinComplete(completions);
  }

  /** Queues a re-arm for every fd reported in the last batch that is still registered. */
  #rearmReported(): void {
    const rearm = this.#rearm;
    const state = this.#state;
    let room = true;
    for (let i = 0; i < this.#rearmCount; i++) {
      const fd = rearm[i];
      if (state[fd] !== REPORTED) continue;
      // After one found no SQ slot, the rest wait too (no submit per fd).
      if (room) room = this.#arm(fd);
      else this.#armLaterFd(fd);
    }
    this.#rearmCount = 0;
  }

  /** Whether completions are waiting in the CQ (left over from a full batch). */
  #cqPending(): boolean {
    return this.ring.cqTail() !== this.ring.cqHead;
  }

  wait(timeoutMs: number): number {
    this.#rearmReported();
    let n = this.#enterAndReap(timeoutMs);
    if (n > 0 || timeoutMs === 0 || this.#consumed === 0) return n;
    // Completions came that report nothing to the Reactor (a send done, a
    // recv while not reading): not the end of the wait, or the Reactor
    // would take the loop for idle and park it. Wait out the rest.
    const end = timeoutMs < 0 ? Infinity : performance.now() + timeoutMs;
    do {
      const left = timeoutMs < 0 ? -1 : Math.ceil(end - performance.now());
      // Past the deadline (by any amount: -1 would mean "no limit") ends it.
      if (timeoutMs >= 0 && left <= 0) break;
      n = this.#enterAndReap(left);
    } while (n === 0 && this.#consumed > 0);
    return n;
  }

  #enterAndReap(timeoutMs: number): number {
    const streams = this.streams;
    let timeout = timeoutMs;
    if (this.#armLater.length !== 0) this.#retryArms();
    if (streams !== null) {
      streams.prepare();
      if (streams.hasReady) timeout = 0;
    }
    // Work that found no SQ slot must not wait for a completion that may
    // never come: look, and retry it at the next turn.
    if (timeout !== 0 && (this.#cqPending() || this.#deferred())) timeout = 0;
    const r = this.ring.enter(timeout);
    if (r < 0) this.#enterFailed(-r);
    return this.#reap();
  }

  /** An `io_uring_enter` failed with `e`: nothing, or the CQ overflowed (reap and go on), or a bug. */
  #enterFailed(e: number): void {
    if (e === EINTR || e === ETIME || e === EBUSY || e === EAGAIN) return;
    throw new SyscallError("io_uring_enter", e);
  }

  async waitBlocking(timeoutMs: number): Promise<number> {
    const ring = this.ring;
    // Work that found no SQ slot (see `IoUring`) is retried by the next
    // wait: no park (nothing in flight may end it), one Deno turn instead.
    if (!this.deferTaskrun) {
      const n = this.wait(0);
      if (n > 0 || timeoutMs === 0 || this.#deferred()) return await this.#denoTurn(n);
      this.#parked = true;
      await ring.waitBlocking(timeoutMs);
      this.#parked = false;
      // SQEs queued meanwhile (a write from a promise) go with the next wait.
      return this.#reap();
    }
    // Only the submitting thread may run the ring's completion work: wait
    // for the kernel to signal that there is some, then run it here. Work
    // queued before the signal was switched on is run by the look below.
    ring.eventfdEnabled(true);
    let n = this.wait(0);
    if (n > 0 || timeoutMs === 0 || this.#deferred()) {
      ring.eventfdEnabled(false);
      return await this.#denoTurn(n);
    }
    this.#parked = true;
    await poll_blocking(this.#pollfd, 1, timeoutMs);
    this.#parked = false;
    n = this.wait(0);
    ring.eventfdEnabled(false);
    read(this.#eventfd, this.#eventfdBuffer, 8); // reset its count (nonblocking)
    return n;
  }

  /**
   * A parked wait lets Deno's loop turn (the Reactor parks for that, too,
   * when Deno has IO waiting): when results were there at once, one
   * `setImmediate` turn stands in for the trip to the thread pool.
   */
  #denoTurn(n: number): Promise<number> {
    return new Promise((resolve) => setImmediate(() => resolve(n)));
  }

  /**
   * Ends a parked wait: one write to the eventfd it polls. Needed because
   * the Reactor's waker is an eventfd too, and the kernel (6.18) defers an
   * io_uring eventfd signal raised inside another eventfd's wake-up, once:
   * after the first, such signals are dropped and the park would not end.
   */
  wakeParked(): void {
    if (this.#eventfd < 0) {
      // No eventfd (no DEFER_TASKRUN): a NOP completes the wait in io_uring_enter.
      this.#nop();
      return;
    }
    write(this.#eventfd, this.#one, 8);
  }

  /** Reads completions: poll results and stream readiness, up to maxEvents; drops stale ones. */
  #reap(): number {
    const ring = this.ring;
    const cq = ring.cq;
    const cqSigned = ring.cqSigned;
    const state = this.#state;
    const seqs = this.#seqs;
    const streams = this.streams;
    const max = this.#maxEvents;
    let head = ring.cqHead;
    const tail = ring.cqTail();
    let n = 0;
    while (head !== tail && n < max) {
      const w = ring.cqe(head);
      head = (head + 1) >>> 0;
      const fd = cq[w + CQE_USER_DATA_LO];
      const hi = cq[w + CQE_USER_DATA_HI];
      const kind = hi >>> KIND_SHIFT;
      if (kind !== 0) {
        if (kind !== KIND_IGNORE && streams !== null) {
          streams.complete(fd, kind, hi & GEN_MASK, cqSigned[w + CQE_RES], cq[w + CQE_FLAGS]);
        }
        continue;
      }
      if (hi === 0 || fd >= state.length || seqs[fd] !== hi || state[fd] !== ARMED) continue;
      const res = cqSigned[w + CQE_RES];
      state[fd] = REPORTED;
      this.#rearm[n] = fd;
      this.#resultFd[n] = fd;
      this.#resultEvents[n] = res < 0 ? FAILED : res;
      this.#resultToken[n] = this.#tokens[fd];
      n++;
    }
    this.#consumed = (head - ring.cqHead) >>> 0;
    ring.cqAdvance(head);
    this.#rearmCount = n;
    if (streams !== null && streams.hasReady && n < max) {
      this.#count = n;
      n += streams.collect(this.#emit);
    }
    return n;
  }

  /** Adds a stream's readiness to the results; false when they are full. */
  #push(fd: number, events: number): boolean {
    const i = this.#count;
    if (i >= this.#maxEvents) return false;
    this.#resultFd[i] = fd;
    this.#resultEvents[i] = events;
    this.#resultToken[i] = this.#tokens[fd];
    this.#count = i + 1;
    return true;
  }

  resultFd(i: number): number {
    return this.#resultFd[i];
  }

  resultEvents(i: number): number {
    return this.#resultEvents[i];
  }

  resultToken(i: number): number {
    return this.#resultToken[i];
  }

  /**
   * Lets closed connections' streams deliver what they took, as `close(2)`
   * would, for up to `ms`, turning Deno's loop between looks (a peer in this
   * process can read meanwhile). Call after the loop stopped, before `close`.
   */
  async drain(ms: number = CLOSE_DRAIN_MS): Promise<void> {
    const streams = this.streams;
    if (streams === null || !streams.closing()) return;
    const end = performance.now() + ms;
    while (streams.closing() && performance.now() < end) {
      this.#enterAndReap(0);
      if (streams.closing()) await new Promise((r) => setTimeout(r, 1));
    }
  }

  /**
   * Releases the ring: requests in flight are cancelled, and the fds of
   * closed streams whose bytes did not all go (see `drain`) are closed.
   */
  close(): void {
    this.streams?.closeRemaining();
    // Submit the cancels just queued (the multishot accepts) and reap once:
    // without DEFER_TASKRUN, connections accepted meanwhile are already fds
    // of ours, and their completions (which close them) would go with the ring.
    // Reap until a few turns bring nothing more (50 ms at most).
    try {
      const end = performance.now() + 50;
      for (let quiet = 0; quiet < 3 && performance.now() < end;) {
        if (this.#enterAndReap(0) === 0 && !this.#cqPending() && this.#consumed === 0) quiet++;
        else quiet = 0;
      }
    } catch {
      // closing anyway
    }
    this.ring.close();
    this.streams?.release();
    if (this.#eventfd >= 0) close(this.#eventfd);
  }
}

/**
 * `--backend auto`: io_uring where it can be set up, else epoll, with one
 * log line saying which and why.
 */
export function autoBackend(maxEvents: number, options: IoUringBackendOptions = {}): Backend {
  try {
    const backend = new IoUringBackend(maxEvents, options);
    log.info("backend auto: io_uring ({mode})", {
      mode: backend.deferTaskrun ? "single issuer, deferred task work" : "plain ring",
    });
    return backend;
  } catch (e) {
    if (!(e instanceof IoUringUnavailableError)) throw e;
    log.info("backend auto: epoll, io_uring unavailable: {reason}", { reason: e.message });
    return new EpollBackend(maxEvents);
  }
}
