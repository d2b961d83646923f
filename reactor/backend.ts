/**
 * What the Reactor needs from a readiness mechanism, and the contract every
 * mechanism meets. One file per implementation (`epoll.ts`, `poll.ts`,
 * `select.ts`, `io_uring.ts`), like redis's `ae_epoll.c` / `ae_select.c`.
 *
 * ## Bits
 * Backends take and report epoll's bits (`EPOLLIN`, `EPOLLOUT`, `EPOLLRDHUP`,
 * `EPOLLERR`, `EPOLLHUP`; `EPOLLET`/`EPOLLONESHOT` on epoll only). poll(2)
 * uses the same values; select builds them. The Reactor translates its
 * `Interest` into these bits and back; handlers never see them.
 *
 * ## The readiness contract
 * - **Level-triggered** (every backend): an fd is reported on every wait while
 *   the condition holds. **Edge-triggered** (epoll only): reported when the
 *   condition becomes true; the handler must read or write until EAGAIN (or
 *   a short read, which drained a stream socket, unless the event carried
 *   RDHUP, HUP or ERR) or it will not hear of the fd again.
 * - **Readiness is a hint.** A read or write after a report may still return
 *   EAGAIN (another reader won, the buffer changed): that is normal flow.
 * - **ERR and HUP** are reported whatever the interest, even with none.
 *   `EPOLLERR`: a pending socket error; the next I/O call returns it.
 *   `EPOLLHUP`: both directions are shut (or the connection was reset); bytes
 *   already received may still be read. `EPOLLRDHUP`: the peer sent FIN
 *   (only when asked for; poll reports it as POLLRDHUP).
 * - **What select cannot report:** HUP or ERR on an fd in no set (no
 *   interest means not watched at all), RDHUP (a FIN shows as readable), and
 *   any fd at or above FD_SETSIZE (1024), which it refuses.
 * - **How long results are valid:** from the wait that produced them until
 *   the next wait. An fd closed, or closed and reused, during the dispatch of
 *   a batch may still have results later in that batch: each result carries
 *   the token the fd was registered with, and the Reactor drops results whose
 *   token is no longer the fd's. Interest changed during a batch is applied by
 *   the Reactor, which masks each result by the fd's interest at dispatch.
 * - **Parked waits** (`waitBlocking`) run on another thread. epoll sees
 *   interest changes made meanwhile; poll and select work on a copy taken at
 *   call time, and io_uring's changes are SQEs submitted by the next wait,
 *   so the Reactor wakes them (`changesNeedWake`) to apply them.
 *
 * @module
 */

import type { IoUringStreams } from "./io_uring_streams.ts";

/** The readiness mechanisms. */
export type BackendName = "epoll" | "poll" | "select" | "io_uring";

/** What `--backend` accepts: a mechanism, or `auto` (io_uring where it works, else epoll). */
export type BackendChoice = BackendName | "auto";

/**
 * A batched wait's size: the completions an io_uring batched wait waits for
 * (min_complete), and on the other backends the count below which a loop turn
 * is "small" and the next wait first lets events gather (`batchWaitUs`).
 */
export const BATCH_SIZE = 16;

/**
 * The results a batched wait aims for with `registered` fds: `BATCH_SIZE`,
 * or half the fds when that is fewer (a wait reports each fd once, so a
 * loop with few fds cannot fill a batch: a lone client is not made to
 * wait), and at least 1.
 */
export function batchTarget(registered: number): number {
  const half = registered >> 1;
  return half >= BATCH_SIZE ? BATCH_SIZE : half > 1 ? half : 1;
}

/** The longest batched wait, in µs: 10 ms is already far more latency than it could save CPU. */
export const MAX_BATCH_WAIT_US = 10_000;

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
  /**
   * Ends a `waitBlocking` in progress directly, for a backend whose parked
   * wait the Reactor's waker fd cannot be relied on to end (io_uring with
   * DEFER_TASKRUN, see `io_uring.ts`). Optional; called besides the waker.
   */
  wakeParked?(): void;
  /**
   * Batched waits the backend does itself, in µs (io_uring: in the kernel,
   * `min_wait_usec`; 0 where the kernel cannot). Absent on backends whose
   * batched waits the Reactor does by sleeping before a wait.
   */
  readonly batchWaitUs?: number;
  /**
   * How many completions the backend's own batched wait waits for
   * (`batchTarget` of the fds the Reactor counts), set by the Reactor
   * whenever that count changes. Only on backends with `batchWaitUs`.
   */
  setBatchTarget?(completions: number): void;
  /**
   * Completion-based I/O for connected sockets (io_uring with a
   * provided-buffer ring); absent or null on every other backend.
   */
  readonly streams?: IoUringStreams | null;
  /**
   * Finishes work the kernel has not done yet for fds already closed (io_uring
   * sends of closed connections), for up to `ms`. Optional; the Reactor's
   * `drain` calls it after the loop stopped.
   */
  drain?(ms?: number): Promise<void>;
  /** The fd of result `i` (0 <= i < the count `wait` returned). */
  resultFd(i: number): number;
  /** The event bits of result `i`. */
  resultEvents(i: number): number;
  /** The token the fd of result `i` was registered with, as of the wait. */
  resultToken(i: number): number;
  /** Releases the mechanism (closes the epoll fd, drops arrays). */
  close(): void;
}
