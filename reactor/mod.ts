/**
 * The event loop: `Reactor`, its backends and timers. Knows nothing about
 * protocols.
 *
 * @module
 */

export * from "./backend.ts";
export * from "./epoll.ts";
export * from "./interest.ts";
export * from "./io_uring.ts";
export * from "./io_uring_streams.ts";
export * from "./reactor.ts";
export * from "./timers.ts";
