/**
 * The epoll backend: an epoll instance and one events array, allocated once.
 *
 * `epoll_event.data` carries the fd in its low 32 bits and a registration
 * token in its high 32 bits, so an event that was already in the array when
 * its fd was closed and reused is recognised as stale instead of being given
 * to the new connection.
 *
 * @module
 */

import { EINTR, SyscallError } from "../syscalls/errno.ts";
import {
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
} from "../syscalls/constants.ts";
import {
  close,
  epoll_create1,
  epoll_ctl,
  epoll_wait,
  epoll_wait_blocking,
  errno,
} from "../syscalls/libc.ts";
import { epollEventLayout } from "../syscalls/layout.ts";
import type { Backend } from "./backend.ts";

/** epoll(7) behind the `Backend` interface. */
export class EpollBackend implements Backend {
  readonly name = "epoll" as const;
  readonly supportsEdge = true;
  readonly changesNeedWake = false;
  /** The epoll instance's fd (visible in /proc/self/fd while open). */
  readonly epfd: number;
  readonly #maxEvents: number;
  readonly #events: Uint8Array;
  readonly #words: Uint32Array;
  readonly #stride: number;
  readonly #data: number;
  readonly #ctl: Uint8Array;
  readonly #ctlWords: Uint32Array;

  /**
   * Creates the epoll instance and its events array.
   *
   * @param maxEvents the events array's size (epoll_wait's maxevents)
   * @throws {SyscallError} when epoll_create1 fails (EMFILE, ENOMEM)
   */
  constructor(maxEvents: number) {
    const layout = epollEventLayout();
    this.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (this.epfd < 0) throw new SyscallError("epoll_create1", errno());
    this.#maxEvents = maxEvents;
    this.#events = new Uint8Array(layout.size * maxEvents);
    this.#words = new Uint32Array(this.#events.buffer);
    this.#stride = layout.size >> 2;
    this.#data = layout.dataOffset >> 2;
    this.#ctl = new Uint8Array(layout.size);
    this.#ctlWords = new Uint32Array(this.#ctl.buffer);
  }

  #ctlCall(op: number, fd: number, events: number, token: number, what: string): void {
    const w = this.#ctlWords;
    w[0] = events >>> 0;
    w[this.#data] = fd;
    w[this.#data + 1] = token;
    if (epoll_ctl(this.epfd, op, fd, this.#ctl) < 0) {
      throw new SyscallError("epoll_ctl", errno(), `${what} fd ${fd}`);
    }
  }

  add(fd: number, events: number, token: number): void {
    this.#ctlCall(EPOLL_CTL_ADD, fd, events, token, "ADD");
  }

  modify(fd: number, events: number, token: number): void {
    this.#ctlCall(EPOLL_CTL_MOD, fd, events, token, "MOD");
  }

  remove(fd: number): void {
    this.#ctlCall(EPOLL_CTL_DEL, fd, 0, 0, "DEL");
  }

  wait(timeoutMs: number): number {
    const n = epoll_wait(this.epfd, this.#events, this.#maxEvents, timeoutMs);
    if (n >= 0) return n;
    const e = errno();
    if (e === EINTR) return 0;
    throw new SyscallError("epoll_wait", e);
  }

  async waitBlocking(timeoutMs: number): Promise<number> {
    const n = await epoll_wait_blocking(this.epfd, this.#events, this.#maxEvents, timeoutMs);
    // errno now belongs to a pool thread; the only failure a valid epfd and
    // array can see is EINTR, which is a retry.
    return n < 0 ? 0 : n;
  }

  resultFd(i: number): number {
    return this.#words[i * this.#stride + this.#data];
  }

  resultEvents(i: number): number {
    return this.#words[i * this.#stride];
  }

  resultToken(i: number): number {
    return this.#words[i * this.#stride + this.#data + 1];
  }

  close(): void {
    close(this.epfd);
  }
}
