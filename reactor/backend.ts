/**
 * What the Reactor needs from a readiness mechanism. One file per
 * implementation (`epoll.ts`, `poll.ts`, `select.ts`), like redis's
 * `ae_epoll.c` / `ae_select.c`.
 *
 * Event bits are epoll's everywhere (EPOLLIN == POLLIN and so on), so
 * handlers never know which backend woke them.
 *
 * @module
 */

/** The names accepted by `--backend`. */
export type BackendName = "epoll" | "poll" | "select";

/** A readiness mechanism: an interest list and a wait that fills a result list. */
export interface Backend {
  /** Which mechanism this is. */
  readonly name: BackendName;
  /** Whether EPOLLET and EPOLLONESHOT mean anything here (epoll only). */
  readonly supportsEdge: boolean;
  /**
   * Whether interest changes made while a blocking wait is parked on another
   * thread take effect only after that wait returns (poll and select copy the
   * set in at call time; epoll does not), so the reactor must wake it.
   */
  readonly changesNeedWake: boolean;
  /** Adds an fd with its event bits and a token that comes back with its events. */
  add(fd: number, events: number, token: number): void;
  /** Changes an fd's event bits (and token). */
  modify(fd: number, events: number, token: number): void;
  /** Removes an fd. Call before closing it. */
  remove(fd: number): void;
  /**
   * Waits on the JS thread for at most `timeoutMs` (0: just look; -1: forever)
   * and returns how many results are ready; EINTR counts as 0.
   */
  wait(timeoutMs: number): number;
  /** The same wait, parked on Deno's blocking thread pool so Deno's loop keeps running. */
  waitBlocking(timeoutMs: number): Promise<number>;
  /** The fd of result `i` (0 <= i < the count `wait` returned). */
  resultFd(i: number): number;
  /** The event bits of result `i`. */
  resultEvents(i: number): number;
  /** The token the fd of result `i` was registered with, as of the wait. */
  resultToken(i: number): number;
  /** Releases the mechanism (closes the epoll fd, drops arrays). */
  close(): void;
}
