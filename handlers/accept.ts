/**
 * The accept handler: takes every pending connection (`accept4` until
 * EAGAIN, nonblocking and close-on-exec in one call), sets TCP_NODELAY and
 * hands the fd on.
 *
 * - Errors accept(2) says to retry (the connection died in the queue, or a
 *   network error surfaced through it: ECONNABORTED, EPROTO, ENETDOWN,
 *   ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH,
 *   and EPERM from a firewall) are counted and skipped.
 * - Out of fds (EMFILE/ENFILE) or memory: the listener stays open, but its
 *   interest is dropped so a level-triggered listener cannot spin, and
 *   accepting resumes after a short pause or as soon as a connection closes.
 *   Clients that arrive meanwhile wait in the kernel's backlog.
 * - Any other errno is logged and treated the same way: accepting pauses and
 *   retries. The listener is never lost, and the Acceptor never closes it:
 *   its owner does, once.
 *
 * @module
 */

import { getLogger } from "../log/mod.ts";
import { IPPROTO_TCP, SOCK_CLOEXEC, SOCK_NONBLOCK, TCP_NODELAY } from "../syscalls/constants.ts";
import {
  EAGAIN,
  ECONNABORTED,
  EHOSTDOWN,
  EHOSTUNREACH,
  EINTR,
  EMFILE,
  ENETDOWN,
  ENETUNREACH,
  ENFILE,
  ENOBUFS,
  ENOMEM,
  ENONET,
  ENOPROTOOPT,
  EOPNOTSUPP,
  EPERM,
  EPROTO,
  errnoName,
} from "../syscalls/errno.ts";
import { accept4, close, errno, setsockopt } from "../syscalls/libc.ts";
import { Interest } from "../reactor/interest.ts";
import type { Handler, Reactor } from "../reactor/reactor.ts";
import type { Timer } from "../reactor/timers.ts";
import type { ConnectionCounters } from "./context.ts";
import type { IoUringStreams } from "../reactor/io_uring_streams.ts";

const log = getLogger(["reactor", "accept"]);
const one = new Uint8Array(new Int32Array([1]).buffer);

/** How long accepting pauses after running out of fds, unless a close frees one sooner. */
export const ACCEPT_RETRY_MS = 100;

/** accept(2): "treat them like EAGAIN by retrying" (plus EINTR and a firewall's EPERM). */
const RETRY = new Set([
  EINTR,
  ECONNABORTED,
  EPROTO,
  EPERM,
  ENETDOWN,
  ENOPROTOOPT,
  EHOSTDOWN,
  ENONET,
  EHOSTUNREACH,
  EOPNOTSUPP,
  ENETUNREACH,
]);
const OUT_OF_RESOURCES = new Set([EMFILE, ENFILE, ENOBUFS, ENOMEM]);

/** Accepts connections on a listening socket it does not own. */
export class Acceptor implements Handler {
  /** The listening socket. */
  readonly fd: number;
  readonly #reactor: Reactor;
  readonly #counters: ConnectionCounters;
  readonly #onAccept: (fd: number) => void;
  /** io_uring's completion-based streams, when the reactor has them. */
  readonly #streams: IoUringStreams | null;
  #open = false;
  #paused = false;
  #retry: Timer | null = null;
  #lastLimitLog = -Infinity;
  #lastErrorLog = -Infinity;
  #lastRefusalLog = -Infinity;
  #refused = 0;
  /** When set, accepting stops (e.g. at --max-connections) until `resume()`. */
  gate: (() => boolean) | null = null;

  /**
   * Makes an acceptor for `fd`; `open()` registers it.
   *
   * @param reactor the loop to register with
   * @param fd a listening nonblocking socket (the caller keeps owning it)
   * @param counters where accepts and accept errors are counted
   * @param onAccept takes each new fd; if it throws, it has not taken the fd
   */
  constructor(
    reactor: Reactor,
    fd: number,
    counters: ConnectionCounters,
    onAccept: (fd: number) => void,
  ) {
    this.#reactor = reactor;
    this.fd = fd;
    this.#counters = counters;
    this.#onAccept = onAccept;
    this.#streams = reactor.backend.streams ?? null;
  }

  /** Registers the listener. */
  open(): void {
    // io_uring: a multishot accept makes the connections; `ready` takes them.
    this.#streams?.openListener(this.fd);
    this.#reactor.register(this.fd, this, Interest.READABLE);
    this.#open = true;
  }

  /** Whether accepting is paused. */
  get paused(): boolean {
    return this.#paused;
  }

  /** The listener is readable: accept until EAGAIN (or the gate closes). */
  ready(): void {
    const counters = this.#counters;
    for (;;) {
      if (this.gate !== null && !this.gate()) {
        this.pause(-1);
        return;
      }
      const streams = this.#streams;
      let fd: number;
      let e = 0;
      if (streams !== null) {
        fd = streams.accept(this.fd);
        if (fd < 0) e = -fd;
      } else {
        fd = accept4(this.fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) e = errno();
      }
      if (fd < 0) {
        if (e === EAGAIN) return;
        if (RETRY.has(e)) {
          if (e !== EINTR) counters.acceptErrors++;
          continue;
        }
        this.#failed(e);
        return;
      }
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4);
      counters.accepted++;
      try {
        this.#onAccept(fd);
      } catch (error) {
        this.#refuse(fd, error);
      }
    }
  }

  /** Out of resources, or an errno accept(2) does not list: pause, retry, say so once a second. */
  #failed(e: number): void {
    const counters = this.#counters;
    const now = this.#reactor.now;
    if (OUT_OF_RESOURCES.has(e)) {
      counters.acceptLimitHits++;
      if (now - this.#lastLimitLog > 1000) {
        this.#lastLimitLog = now;
        log.warn("accept: {code}: pausing accepts for {ms} ms or until a connection closes", {
          code: errnoName(e),
          ms: ACCEPT_RETRY_MS,
        });
      }
      this.pause(ACCEPT_RETRY_MS);
      return;
    }
    counters.acceptErrors++;
    if (now - this.#lastErrorLog > 1000) {
      this.#lastErrorLog = now;
      log.error("accept on fd {fd}: {code}; retrying in {ms} ms", {
        fd: this.fd,
        code: errnoName(e),
        ms: ACCEPT_RETRY_MS,
      });
    }
    // A listener in a state accept(2) does not describe (shut down, say) may
    // report a hang-up, which no interest masks: leave the interest list
    // altogether, so it cannot spin the loop, and register again on retry.
    this.#paused = true;
    this.#reactor.deregister(this.fd);
    this.#scheduleRetry(ACCEPT_RETRY_MS);
  }

  /**
   * One connection that cannot be served (select's FD_SETSIZE, say) must
   * not take the listener down: close it, keep accepting.
   */
  #refuse(fd: number, error: unknown): void {
    close(fd);
    this.#counters.closed++;
    this.#refused++;
    const now = this.#reactor.now;
    if (now - this.#lastRefusalLog > 1000) {
      log.warn("accept: refusing fd {fd}: {error} ({n} refused since the last line)", {
        fd,
        error: (error as Error).message,
        n: this.#refused,
      });
      this.#lastRefusalLog = now;
      this.#refused = 0;
    }
  }

  /** `ready` threw (the reactor logged it and deregistered the fd): register again later. */
  crashed(): void {
    if (!this.#open) return;
    this.#paused = true;
    this.#scheduleRetry(ACCEPT_RETRY_MS);
  }

  /** Stops taking connections; `retryMs` >= 0 resumes by itself after that long. */
  pause(retryMs: number): void {
    if (!this.#paused) {
      this.#paused = true;
      if (this.#reactor.isRegistered(this.fd)) this.#reactor.reregister(this.fd, Interest.NONE);
    }
    if (retryMs >= 0) this.#scheduleRetry(retryMs);
  }

  #scheduleRetry(ms: number): void {
    if (this.#retry === null) this.#retry = this.#reactor.setTimer(ms, () => this.resume());
    else this.#reactor.resetTimer(this.#retry, ms);
  }

  /** Takes connections again (after a pause). */
  resume(): void {
    if (!this.#paused || !this.#open) return;
    this.#paused = false;
    if (this.#retry !== null) this.#reactor.cancelTimer(this.#retry);
    if (this.#reactor.isRegistered(this.fd)) {
      this.#reactor.reregister(this.fd, Interest.READABLE);
    } else {
      this.#reactor.register(this.fd, this, Interest.READABLE); // after a crash
    }
  }

  /** Deregisters the listener. It stays open: the owner closes it. */
  close(): void {
    this.#open = false;
    if (this.#retry !== null) this.#reactor.cancelTimer(this.#retry);
    this.#reactor.deregister(this.fd);
    this.#streams?.closeListener(this.fd);
  }
}
