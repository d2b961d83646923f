/**
 * The accept handler: takes every pending connection (`accept4` until
 * EAGAIN, nonblocking and close-on-exec in one call), sets TCP_NODELAY and
 * hands the fd on.
 *
 * Out of fds (EMFILE/ENFILE) or memory: the listener stays open, but its
 * interest is dropped so a level-triggered listener cannot spin, and accepting
 * resumes after a short pause or as soon as a connection closes. Clients that
 * arrive meanwhile wait in the kernel's backlog and are served then.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  EPOLLIN,
  IPPROTO_TCP,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  TCP_NODELAY,
} from "../syscalls/constants.ts";
import {
  EAGAIN,
  ECONNABORTED,
  EINTR,
  EMFILE,
  ENFILE,
  ENOBUFS,
  ENOMEM,
  EPERM,
  EPROTO,
  errnoName,
  SyscallError,
} from "../syscalls/errno.ts";
import { accept4, close, errno, setsockopt } from "../syscalls/libc.ts";
import type { Handler, Reactor } from "../reactor/reactor.ts";
import type { Timer } from "../reactor/timers.ts";

const log = getLogger(["reactor", "accept"]);
const one = new Uint8Array(new Int32Array([1]).buffer);

/** How long accepting pauses after running out of fds, unless a close frees one sooner. */
export const ACCEPT_RETRY_MS = 100;

/** Accepts connections on a listening socket. */
export class Acceptor implements Handler {
  /** The listening socket. */
  readonly fd: number;
  readonly #reactor: Reactor;
  readonly #onAccept: (fd: number) => void;
  #paused = false;
  #retry: Timer | null = null;
  #lastLimitLog = -Infinity;
  #lastRefusalLog = -Infinity;
  #refused = 0;
  /** When set, accepting stops (e.g. at --max-connections) until `resume()`. */
  gate: (() => boolean) | null = null;

  constructor(reactor: Reactor, fd: number, onAccept: (fd: number) => void) {
    this.#reactor = reactor;
    this.fd = fd;
    this.#onAccept = onAccept;
  }

  /** Registers the listener. */
  open(): void {
    this.#reactor.register(this.fd, this, EPOLLIN | this.#reactor.triggerBits);
  }

  /** Whether accepting is paused. */
  get paused(): boolean {
    return this.#paused;
  }

  ready(): void {
    const counters = this.#reactor.counters;
    for (;;) {
      if (this.gate !== null && !this.gate()) {
        this.pause(-1);
        return;
      }
      const fd = accept4(this.fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const e = errno();
        if (e === EAGAIN) return;
        if (e === EINTR || e === ECONNABORTED || e === EPROTO || e === EPERM) continue;
        if (e === EMFILE || e === ENFILE || e === ENOBUFS || e === ENOMEM) {
          counters.acceptLimitHits++;
          const now = this.#reactor.now;
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
        throw new SyscallError("accept4", e, `listener fd ${this.fd}`);
      }
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4);
      counters.accepted++;
      try {
        this.#onAccept(fd);
      } catch (error) {
        // One connection that cannot be served (select's FD_SETSIZE, say)
        // must not take the listener down: refuse it, keep accepting. The
        // rule: if onAccept throws, it has not taken the fd.
        close(fd);
        counters.closed++;
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
    }
  }

  /** Stops taking connections; `retryMs` >= 0 resumes by itself after that long. */
  pause(retryMs: number): void {
    if (!this.#paused) {
      this.#paused = true;
      this.#reactor.modify(this.fd, 0);
    }
    if (retryMs >= 0) {
      if (this.#retry === null) this.#retry = this.#reactor.setTimer(retryMs, () => this.resume());
      else this.#reactor.resetTimer(this.#retry, retryMs);
    }
  }

  /** Takes connections again (after a pause). */
  resume(): void {
    if (!this.#paused || !this.#reactor.isRegistered(this.fd)) return;
    this.#paused = false;
    if (this.#retry !== null) this.#reactor.cancelTimer(this.#retry);
    this.#reactor.modify(this.fd, EPOLLIN | this.#reactor.triggerBits);
  }

  /** Unregisters the listener (it stays open; the owner closes it). */
  close(): void {
    if (this.#retry !== null) this.#reactor.cancelTimer(this.#retry);
    if (this.#reactor.isRegistered(this.fd)) this.#reactor.unregister(this.fd);
  }
}
