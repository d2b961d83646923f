/**
 * The poll(2) backend: one `struct pollfd` array kept in step with the
 * interest list, instead of the textbook loop that rebuilds the array
 * before every call.
 *
 * - add appends (the array doubles when full), remove moves the last entry
 *   into the hole, modify edits `events` in place; an fd -> slot index makes
 *   all three O(1). The kernel still copies and scans the whole array on
 *   every call: that O(n) per wait is the cost this backend exists to show.
 * - Level-triggered only. EPOLLET and EPOLLONESHOT are refused rather than
 *   silently ignored, because a handler written for edge mode would stall.
 * - Results are a compact (fd, events, token) list of at most `maxEvents`.
 *   When more are ready, the next scan starts after the last one reported,
 *   so a few busy fds at the front of the array cannot starve the rest.
 * - POLLNVAL (the fd was closed while still listed) is reported as
 *   EPOLLERR|EPOLLHUP, which every handler already treats as "gone".
 *
 * @module
 */

import { EEXIST, EINTR, ENOENT, SyscallError } from "../syscalls/errno.ts";
import { EPOLLERR, EPOLLET, EPOLLHUP, EPOLLONESHOT, POLLNVAL } from "../syscalls/constants.ts";
import { errno, poll, poll_blocking } from "../syscalls/libc.ts";
import { POLLFD_SIZE } from "../syscalls/layout.ts";
import type { Backend } from "./backend.ts";
import { sizeFor } from "./fd_table.ts";
import { ScanningBackend } from "./ready_list.ts";

/** The message for EPOLLET/EPOLLONESHOT given to a level-triggered backend. */
export const POLL_EDGE_MESSAGE =
  "poll is level-triggered only: EPOLLET/EPOLLONESHOT need the epoll backend";

/** `pollfd.events` is a `short`: only the low 16 bits exist (EPOLLRDHUP 0x2000 fits). */
const SHORT_BITS = 0xffff;
/** Int32 words and Int16 halves per pollfd. */
const WORDS = POLLFD_SIZE >> 2;
const HALVES = POLLFD_SIZE >> 1;

/**
 * A pollfd array with typed views: `fds[i * 2]` is slot i's fd,
 * `halves[i * 4 + 2]` its events and `halves[i * 4 + 3]` its revents.
 */
class PollfdArray {
  bytes: Uint8Array;
  fds: Int32Array;
  halves: Int16Array;
  tokens: Uint32Array;

  constructor(capacity: number) {
    this.bytes = new Uint8Array(capacity * POLLFD_SIZE);
    this.fds = new Int32Array(this.bytes.buffer);
    this.halves = new Int16Array(this.bytes.buffer);
    this.tokens = new Uint32Array(capacity);
  }

  get capacity(): number {
    return this.tokens.length;
  }

  /** Grows to at least `capacity` slots, keeping the first `used`. */
  grow(capacity: number, used: number): void {
    let size = this.capacity || 1;
    while (size < capacity) size *= 2;
    if (size === this.capacity) return;
    const bytes = new Uint8Array(size * POLLFD_SIZE);
    bytes.set(this.bytes.subarray(0, used * POLLFD_SIZE));
    const tokens = new Uint32Array(size);
    tokens.set(this.tokens.subarray(0, used));
    this.bytes = bytes;
    this.fds = new Int32Array(bytes.buffer);
    this.halves = new Int16Array(bytes.buffer);
    this.tokens = tokens;
  }
}

/** poll(2) behind the `Backend` interface. */
export class PollBackend extends ScanningBackend implements Backend {
  readonly name = "poll" as const;
  readonly supportsEdge = false;
  readonly changesNeedWake = true;

  /** The live interest list: entries [0, #count) are in use. */
  #live = new PollfdArray(64);
  #count = 0;
  /** fd -> slot in #live, -1 when the fd is not registered. */
  #slotOf = new Int32Array(1024).fill(-1);
  /**
   * What a parked wait hands the kernel: a copy of #live taken as it starts.
   * See `waitBlocking` for why the live array is never given to a pool thread.
   */
  readonly #parkedSet = new PollfdArray(64);

  /** How many fds are registered (the `nfds` each wait passes). */
  get size(): number {
    return this.#count;
  }

  #checkEvents(events: number): number {
    if ((events & (EPOLLET | EPOLLONESHOT)) !== 0) throw new Error(POLL_EDGE_MESSAGE);
    // Other epoll-only bits above 16 (EPOLLEXCLUSIVE, EPOLLWAKEUP) only tune
    // wake-ups; poll has no equivalent, and dropping them changes no result.
    return events & SHORT_BITS;
  }

  #slot(fd: number): number {
    return fd >= 0 && fd < this.#slotOf.length ? this.#slotOf[fd] : -1;
  }

  add(fd: number, events: number, token: number): void {
    const bits = this.#checkEvents(events);
    if (fd < 0) throw new RangeError(`poll: cannot add fd ${fd}`);
    if (this.#slot(fd) >= 0) throw new SyscallError("poll", EEXIST, `add fd ${fd}`);
    if (fd >= this.#slotOf.length) {
      const size = sizeFor(this.#slotOf.length, fd);
      const slotOf = new Int32Array(size).fill(-1);
      slotOf.set(this.#slotOf);
      this.#slotOf = slotOf;
    }
    const slot = this.#count;
    if (slot === this.#live.capacity) this.#live.grow(slot + 1, slot);
    const live = this.#live;
    live.fds[slot * WORDS] = fd;
    live.halves[slot * HALVES + 2] = bits;
    live.halves[slot * HALVES + 3] = 0;
    live.tokens[slot] = token;
    this.#slotOf[fd] = slot;
    this.#count = slot + 1;
  }

  modify(fd: number, events: number, token: number): void {
    const bits = this.#checkEvents(events);
    const slot = this.#slot(fd);
    if (slot < 0) throw new SyscallError("poll", ENOENT, `modify fd ${fd}`);
    this.#live.halves[slot * HALVES + 2] = bits;
    this.#live.tokens[slot] = token;
  }

  remove(fd: number): void {
    const slot = this.#slot(fd);
    if (slot < 0) throw new SyscallError("poll", ENOENT, `remove fd ${fd}`);
    const live = this.#live;
    const last = this.#count - 1;
    if (slot !== last) {
      // Move the last entry into the hole: the array stays dense, nothing shifts.
      live.bytes.copyWithin(slot * POLLFD_SIZE, last * POLLFD_SIZE, (last + 1) * POLLFD_SIZE);
      live.tokens[slot] = live.tokens[last];
      this.#slotOf[live.fds[slot * WORDS]] = slot;
    }
    this.#slotOf[fd] = -1;
    this.#count = last;
  }

  wait(timeoutMs: number): number {
    const count = this.#count;
    const n = poll(this.#live.bytes, count, timeoutMs);
    if (n > 0) return this.#collect(this.#live, count, n, false);
    if (n === 0) return 0;
    const e = errno();
    if (e === EINTR) return 0;
    throw new SyscallError("poll", e, `${count} fds`);
  }

  /**
   * The parked wait, on a copy of the interest list.
   *
   * Why a copy: while this call sits on a pool thread, the JS thread keeps
   * running (Deno timers, signal listeners, the reactor's own register and
   * unregister), and the reactor does change the interest list then — it
   * only wakes us afterwards (`changesNeedWake`). Given the live array, the
   * kernel would race with those writes: the pool thread may not even have
   * entered poll(2) yet when JS edits the array, a remove moves another fd
   * into a slot whose revents the kernel then writes back (so readiness is
   * reported for the wrong fd), and a grow replaces the buffer the pool
   * thread holds a raw pointer to. The copy is touched by nobody but the
   * kernel until the call returns; it costs one memcpy of 8 bytes per fd,
   * paid only when idle. Changes made meanwhile reach the kernel on the next
   * wait, which the reactor's eventfd wake brings about at once.
   *
   * Results are then checked against the live list: an fd removed (or
   * removed and re-added under a new token) while parked is dropped. Bits no
   * longer asked for (EPOLLOUT disarmed meanwhile) are masked by the reactor
   * at dispatch, as for every backend.
   */
  async waitBlocking(timeoutMs: number): Promise<number> {
    const count = this.#count;
    const parked = this.#parkedSet;
    if (parked.capacity < count) parked.grow(count, 0);
    parked.bytes.set(this.#live.bytes.subarray(0, count * POLLFD_SIZE));
    parked.tokens.set(this.#live.tokens.subarray(0, count));
    const n = await poll_blocking(parked.bytes, count, timeoutMs);
    // errno now belongs to a pool thread. EINTR is a retry; anything else
    // (EINVAL, ENOMEM) recurs on the next JS-thread wait, which throws it.
    return n > 0 ? this.#collect(parked, count, n, true) : 0;
  }

  /**
   * Copies up to maxEvents ready entries of `set` into the results, starting
   * at the cursor and wrapping; stops early once the `ready` entries the
   * kernel counted are found.
   */
  #collect(set: PollfdArray, count: number, ready: number, parked: boolean): number {
    const max = this.ready.capacity;
    const halves = set.halves;
    const fds = set.fds;
    const live = this.#live;
    const resultFds = this.ready.fds;
    const resultEvents = this.ready.events;
    const resultTokens = this.ready.tokens;
    let slot = this.ready.cursor < count ? this.ready.cursor : 0;
    let found = 0;
    let out = 0;
    for (let seen = 0; seen < count && found < ready; seen++, slot++) {
      if (slot === count) slot = 0;
      let revents = halves[slot * HALVES + 3] & SHORT_BITS;
      if (revents === 0) continue;
      found++;
      const fd = fds[slot * WORDS];
      const token = set.tokens[slot];
      if (parked) {
        // The live list may have changed while we were parked.
        const now = this.#slot(fd);
        if (now < 0 || live.tokens[now] !== token) continue;
      }
      if (out === max) {
        // Full: this ready entry is the first to report next time.
        this.ready.cursor = slot;
        return out;
      }
      if ((revents & POLLNVAL) !== 0) revents = (revents & ~POLLNVAL) | EPOLLERR | EPOLLHUP;
      resultFds[out] = fd;
      resultEvents[out] = revents;
      resultTokens[out] = token;
      out++;
    }
    return out;
  }

  close(): void {
    // Nothing to release in the kernel: poll keeps no state between calls.
    this.#count = 0;
    this.#slotOf.fill(-1);
  }
}
