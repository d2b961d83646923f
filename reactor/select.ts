/**
 * The select(2) backend, like redis's `ae_select.c`: master read, write and
 * except `fd_set`s hold the interest; each wait copies them into working
 * sets (select overwrites its arguments) and scans the result bits.
 *
 * - `fd_set` is 1024 bits, so an fd >= FD_SETSIZE cannot be watched at all.
 *   `add` refuses it with `FdSetsizeError` (a `SyscallError`, EINVAL) whose
 *   message names the fix, so an accept path can close that one connection
 *   and keep serving the rest. (glibc's FD_SET would write past the set.)
 * - readable -> EPOLLIN, writable -> EPOLLOUT, exceptional -> EPOLLPRI. The
 *   kernel counts a hang-up or a socket error as readable (and an error as
 *   writable too), so handlers learn of them from recv/send as usual. An fd
 *   registered with no interest bits is in no set and so not watched at all:
 *   unlike epoll and poll, select cannot report EPOLLHUP on its own.
 * - Level-triggered only: EPOLLET/EPOLLONESHOT are refused.
 * - Results are compact (fd, events, token), at most `maxEvents`; a scan cut
 *   short resumes after the last fd reported, so no fd is starved.
 * - A closed fd still in a set makes select fail with EBADF for everyone.
 *   The reactor removes before it closes, but if a caller does not, the
 *   culprits are found with fcntl and reported as EPOLLERR|EPOLLHUP (what
 *   poll's POLLNVAL becomes) instead of the loop dying.
 *
 * @module
 */

import { EBADF, EEXIST, EINTR, EINVAL, ENOENT, SyscallError } from "../syscalls/errno.ts";
import {
  EPOLLERR,
  EPOLLET,
  EPOLLHUP,
  EPOLLIN,
  EPOLLONESHOT,
  EPOLLOUT,
  EPOLLPRI,
  EPOLLRDHUP,
  F_GETFL,
  FD_SETSIZE,
} from "../syscalls/constants.ts";
import { errno, fcntl, select, select_blocking } from "../syscalls/libc.ts";
import { FD_SET_BYTES, TIMEVAL_SIZE } from "../syscalls/layout.ts";
import type { Backend } from "./backend.ts";
import { ScanningBackend } from "./ready_list.ts";

/** The message for EPOLLET/EPOLLONESHOT given to the select backend. */
export const SELECT_EDGE_MESSAGE =
  "select is level-triggered only: EPOLLET/EPOLLONESHOT need the epoll backend";

/** EPOLLRDHUP has no select equivalent: a peer's FIN shows as readable. */
const READ_INTEREST = EPOLLIN | EPOLLRDHUP;

/**
 * An fd at or above FD_SETSIZE given to the select backend. A `SyscallError`
 * (EINVAL) so code that handles failed registrations handles this one too.
 */
export class FdSetsizeError extends SyscallError {
  /** The fd that was refused. */
  readonly fd: number;

  /** `fd` is the descriptor that does not fit in an `fd_set`. */
  constructor(fd: number) {
    super("select", EINVAL, `fd ${fd}`);
    this.name = "FdSetsizeError";
    this.message =
      `select: fd ${fd} is at or above FD_SETSIZE (${FD_SETSIZE}); use --backend epoll or poll`;
    this.fd = fd;
  }
}

/** select(2) behind the `Backend` interface. */
export class SelectBackend extends ScanningBackend implements Backend {
  readonly name = "select" as const;
  readonly supportsEdge = false;
  readonly changesNeedWake = true;

  // Interest: changed only by add/modify/remove, never handed to the kernel.
  readonly #readMaster = new Uint8Array(FD_SET_BYTES);
  readonly #writeMaster = new Uint8Array(FD_SET_BYTES);
  readonly #exceptMaster = new Uint8Array(FD_SET_BYTES);
  // What the kernel reads and overwrites: refilled from the masters per wait.
  readonly #readSet = new Uint8Array(FD_SET_BYTES);
  readonly #writeSet = new Uint8Array(FD_SET_BYTES);
  readonly #exceptSet = new Uint8Array(FD_SET_BYTES);
  /** `struct timeval`: tv_sec in words 0-1, tv_usec in words 2-3 (little-endian). */
  readonly #timeval = new Uint8Array(TIMEVAL_SIZE);
  readonly #timevalWords = new Int32Array(this.#timeval.buffer);
  /** Per fd: 1 when registered. */
  readonly #registered = new Uint8Array(FD_SETSIZE);
  /** Per fd: the event bits asked for. */
  readonly #events = new Int32Array(FD_SETSIZE);
  /** Per fd: the token of the registration. */
  readonly #tokens = new Uint32Array(FD_SETSIZE);
  /** Tokens as of the start of a parked wait (see `waitBlocking`). */
  readonly #parkedTokens = new Uint32Array(FD_SETSIZE);
  /** Highest registered fd, -1 when none: select's nfds is this + 1. */
  #maxFd = -1;

  /** Highest registered fd (select's nfds - 1), or -1. */
  get maxFd(): number {
    return this.#maxFd;
  }

  #checkEvents(events: number): void {
    if ((events & (EPOLLET | EPOLLONESHOT)) !== 0) throw new Error(SELECT_EDGE_MESSAGE);
  }

  #setBits(fd: number, events: number): void {
    const byte = fd >> 3;
    const bit = 1 << (fd & 7);
    const r = this.#readMaster;
    const w = this.#writeMaster;
    const x = this.#exceptMaster;
    r[byte] = (events & READ_INTEREST) !== 0 ? r[byte] | bit : r[byte] & ~bit;
    w[byte] = (events & EPOLLOUT) !== 0 ? w[byte] | bit : w[byte] & ~bit;
    x[byte] = (events & EPOLLPRI) !== 0 ? x[byte] | bit : x[byte] & ~bit;
  }

  add(fd: number, events: number, token: number): void {
    this.#checkEvents(events);
    if (fd >= FD_SETSIZE) throw new FdSetsizeError(fd);
    if (fd < 0) throw new RangeError(`select: cannot add fd ${fd}`);
    if (this.#registered[fd]) throw new SyscallError("select", EEXIST, `add fd ${fd}`);
    this.#registered[fd] = 1;
    this.#events[fd] = events;
    this.#tokens[fd] = token;
    this.#setBits(fd, events);
    if (fd > this.#maxFd) this.#maxFd = fd;
  }

  modify(fd: number, events: number, token: number): void {
    this.#checkEvents(events);
    if (fd < 0 || fd >= FD_SETSIZE || !this.#registered[fd]) {
      throw new SyscallError("select", ENOENT, `modify fd ${fd}`);
    }
    this.#events[fd] = events;
    this.#tokens[fd] = token;
    this.#setBits(fd, events);
  }

  remove(fd: number): void {
    if (fd < 0 || fd >= FD_SETSIZE || !this.#registered[fd]) {
      throw new SyscallError("select", ENOENT, `remove fd ${fd}`);
    }
    this.#registered[fd] = 0;
    this.#events[fd] = 0;
    this.#tokens[fd] = 0;
    this.#setBits(fd, 0);
    if (fd === this.#maxFd) {
      let m = fd - 1;
      while (m >= 0 && !this.#registered[m]) m--;
      this.#maxFd = m;
    }
  }

  /** Copies the masters into the working sets and sets the timeval; returns the timeval or null. */
  #prepare(timeoutMs: number): Uint8Array | null {
    this.#readSet.set(this.#readMaster);
    this.#writeSet.set(this.#writeMaster);
    this.#exceptSet.set(this.#exceptMaster);
    if (timeoutMs < 0) return null; // NULL timeval: wait forever
    // Linux rewrites the timeval with the time left, so it is set every call.
    // Both supported architectures are little-endian and the values are
    // small: the high words of the two longs are 0.
    const w = this.#timevalWords;
    w[0] = Math.floor(timeoutMs / 1000);
    w[1] = 0;
    w[2] = (timeoutMs % 1000) * 1000;
    w[3] = 0;
    return this.#timeval;
  }

  wait(timeoutMs: number): number {
    const nfds = this.#maxFd + 1;
    const tv = this.#prepare(timeoutMs);
    const n = select(nfds, this.#readSet, this.#writeSet, this.#exceptSet, tv);
    if (n > 0) return this.#collect(nfds, n, this.#tokens);
    if (n === 0) return 0;
    const e = errno();
    if (e === EINTR) return 0;
    if (e === EBADF) return this.#reportClosed(nfds);
    throw new SyscallError("select", e, `nfds ${nfds}`);
  }

  /**
   * The parked wait. The kernel gets the working sets and the timeval, which
   * only a wait writes and no wait runs while this one is parked; add, modify
   * and remove (which the reactor does call meanwhile, then wakes us) touch
   * the masters only, so the kernel never reads memory JS is changing.
   *
   * What can change meanwhile is which registration an fd number means: it
   * may be removed, closed and reused by a new connection before the result
   * is read. So the tokens are copied as the wait starts and reported from
   * the copy, and a result is dropped when its fd's registration changed
   * (the reactor's token check would drop it anyway). Bits no longer asked
   * for (EPOLLOUT disarmed meanwhile) are masked by the reactor at dispatch,
   * as for every backend.
   */
  async waitBlocking(timeoutMs: number): Promise<number> {
    const nfds = this.#maxFd + 1;
    const tv = this.#prepare(timeoutMs);
    const tokens = this.#parkedTokens;
    tokens.set(this.#tokens.subarray(0, nfds));
    const n = await select_blocking(nfds, this.#readSet, this.#writeSet, this.#exceptSet, tv);
    // errno belongs to a pool thread: EINTR is a retry, and EBADF (an fd
    // closed before it was removed) recurs on the next JS-thread wait, which
    // reports it.
    return n > 0 ? this.#collect(nfds, n, tokens) : 0;
  }

  /**
   * Scans the working sets from the cursor, wrapping, into the results;
   * stops once the `ready` bits the kernel counted are found or maxEvents
   * results are out. `tokens` are the tokens as of the wait's start.
   */
  #collect(nfds: number, ready: number, tokens: Uint32Array): number {
    const max = this.ready.capacity;
    const r = this.#readSet;
    const w = this.#writeSet;
    const x = this.#exceptSet;
    const registered = this.#registered;
    const liveTokens = this.#tokens;
    const resultFds = this.ready.fds;
    const resultEvents = this.ready.events;
    const resultTokens = this.ready.tokens;
    let fd = this.ready.cursor < nfds ? this.ready.cursor : 0;
    let found = 0;
    let out = 0;
    for (let seen = 0; seen < nfds && found < ready;) {
      if (fd >= nfds) fd = 0;
      const byte = fd >> 3;
      if ((fd & 7) === 0 && (r[byte] | w[byte] | x[byte]) === 0) {
        // Eight quiet fds at once: the common case with many idle fds.
        const step = Math.min(8, nfds - fd);
        fd += step;
        seen += step;
        continue;
      }
      const bit = 1 << (fd & 7);
      let events = 0;
      if ((r[byte] & bit) !== 0) events |= EPOLLIN;
      if ((w[byte] & bit) !== 0) events |= EPOLLOUT;
      if ((x[byte] & bit) !== 0) events |= EPOLLPRI;
      if (events !== 0) {
        // select counts bits, not fds: readable and writable count 2.
        found += ((events & EPOLLIN) !== 0 ? 1 : 0) + ((events & EPOLLOUT) !== 0 ? 1 : 0) +
          ((events & EPOLLPRI) !== 0 ? 1 : 0);
        const token = tokens[fd];
        // For a JS-thread wait tokens === liveTokens and nothing changed;
        // after a parked wait the registration may have.
        // (Bits no longer asked for are masked by the reactor at dispatch.)
        if (registered[fd] && liveTokens[fd] === token) {
          {
            if (out === max) {
              this.ready.cursor = fd; // the first to report next time
              return out;
            }
            resultFds[out] = fd;
            resultEvents[out] = events;
            resultTokens[out] = token;
            out++;
          }
        }
      }
      fd++;
      seen++;
    }
    return out;
  }

  /**
   * select failed with EBADF: some registered fd was closed before it was
   * removed. Reports each such fd as EPOLLERR|EPOLLHUP so its handler
   * releases it, rather than failing every wait from now on.
   */
  #reportClosed(nfds: number): number {
    const max = this.ready.capacity;
    let out = 0;
    for (let fd = 0; fd < nfds && out < max; fd++) {
      if (!this.#registered[fd] || fcntl(fd, F_GETFL, 0) >= 0) continue;
      this.ready.fds[out] = fd;
      this.ready.events[out] = EPOLLERR | EPOLLHUP;
      this.ready.tokens[out] = this.#tokens[fd];
      out++;
    }
    if (out === 0) throw new SyscallError("select", EBADF, `nfds ${nfds}`);
    return out;
  }

  close(): void {
    // Nothing to release in the kernel: select keeps no state between calls.
    this.#registered.fill(0);
    this.#readMaster.fill(0);
    this.#writeMaster.fill(0);
    this.#exceptMaster.fill(0);
    this.#maxFd = -1;
  }
}
