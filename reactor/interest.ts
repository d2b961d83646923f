/**
 * The reactor's vocabulary: what a handler asks to hear about (`Interest`)
 * and what it is told (`Ready`). Handlers never see a kernel flag; the
 * reactor turns an interest into the backend's bits (adding EPOLLRDHUP to a
 * read interest, and EPOLLET in edge-triggered mode), like mio's `Interest`
 * and redis's `AE_READABLE` / `AE_WRITABLE`.
 *
 * The `Ready` values are poll(2)'s, which epoll(7) shares bit for bit, so the
 * epoll and poll backends need no translation on the hot path and select
 * builds the same bits. That is a convenience of this file, not a promise to
 * handlers: test readiness with the names.
 *
 * @module
 */

/** What a handler wants to hear about an fd: combine with `|`. */
export const Interest = {
  /** Nothing: the fd stays registered but reports only errors and hang-ups. */
  NONE: 0,
  /** Bytes (or a connection, or the peer's FIN) can be read. */
  READABLE: 0x001,
  /** Bytes can be written. */
  WRITABLE: 0x004,
} as const;

/** A combination of `Interest` values. */
export type Interest = number;

/** What a handler is told about an fd (a bit set; several may come at once). */
export const Ready = {
  /** A read will not block: bytes, a pending connection, or end of stream. */
  READABLE: 0x001,
  /** A write will not block. */
  WRITABLE: 0x004,
  /** The socket has a pending error (read it with a read, write or SO_ERROR). */
  ERROR: 0x008,
  /** Both directions are closed (or the fd is gone); delivered whatever the interest. */
  HANGUP: 0x010,
  /** The peer sent FIN: reads will return the bytes left, then 0. A hint, never alone a reason to stop reading. */
  READ_CLOSED: 0x2000,
} as const;

/** Readiness bits reported whatever the interest (the kernel cannot mask them). */
export const ALWAYS_REPORTED: number = Ready.ERROR | Ready.HANGUP;
