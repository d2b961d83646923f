/**
 * errno numbers and names for Linux (x86_64 and aarch64 share the asm-generic
 * values), and the typed error every failed call raises.
 *
 * @module
 */

/** Operation not permitted. */
export const EPERM = 1;
/** No such file or directory. */
export const ENOENT = 2;
/** Interrupted system call: retry. */
export const EINTR = 4;
/** Bad file descriptor. */
export const EBADF = 9;
/** Try again: the nonblocking call would block (== EWOULDBLOCK). */
export const EAGAIN = 11;
/** Out of memory. */
export const ENOMEM = 12;
/** Device or resource busy (io_uring_enter: the CQ is full; reap, then retry). */
export const EBUSY = 16;
/** Permission denied. */
export const EACCES = 13;
/** Already exists (epoll_ctl ADD of a registered fd). */
export const EEXIST = 17;
/** Cross-device link; openat2 RESOLVE_BENEATH: the path would leave the directory. */
export const EXDEV = 18;
/** Not a directory (a path component is a file). */
export const ENOTDIR = 20;
/** Is a directory. */
export const EISDIR = 21;
/** Invalid argument. */
export const EINVAL = 22;
/** File name too long. */
export const ENAMETOOLONG = 36;
/** Function not implemented (a syscall this kernel lacks). */
export const ENOSYS = 38;
/** Too many symbolic links, or a symlink refused (O_NOFOLLOW, RESOLVE_NO_SYMLINKS). */
export const ELOOP = 40;
/** The system-wide open-file table is full. */
export const ENFILE = 23;
/** This process hit RLIMIT_NOFILE. */
export const EMFILE = 24;
/** Broken pipe: the peer is gone (send with MSG_NOSIGNAL). */
export const EPIPE = 32;
/** Protocol error (accept may report it for an aborted handshake). */
export const EPROTO = 71;
/** Not a socket. */
export const ENOTSOCK = 88;
/** Address already in use. */
export const EADDRINUSE = 98;
/** Cannot assign requested address. */
export const EADDRNOTAVAIL = 99;
/** The connection was aborted before accept took it. */
export const ECONNABORTED = 103;
/** Connection reset by peer. */
export const ECONNRESET = 104;
/** No buffer space. */
export const ENOBUFS = 105;
/** Not connected. */
export const ENOTCONN = 107;
/** Timed out. */
export const ETIMEDOUT = 110;
/** Connection refused. */
export const ECONNREFUSED = 111;
/** Host unreachable. */
export const EHOSTUNREACH = 113;
/** Nonblocking connect under way. */
export const EINPROGRESS = 115;

/** Protocol not available (accept: retry). */
export const ENOPROTOOPT = 92;
/** Operation not supported (accept: retry). */
export const EOPNOTSUPP = 95;
/** Network is down (accept: retry). */
export const ENETDOWN = 100;
/** Network is unreachable (accept: retry). */
export const ENETUNREACH = 101;
/** Host is down (accept: retry). */
export const EHOSTDOWN = 112;
/** Machine is not on the network (accept: retry). */
export const ENONET = 64;
/** Timer expired (io_uring_enter: the wait's timeout ran out). */
export const ETIME = 62;
/** Operation canceled (io_uring: a request we cancelled). */
export const ECANCELED = 125;

const NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  9: "EBADF",
  10: "ECHILD",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  25: "ENOTTY",
  28: "ENOSPC",
  29: "ESPIPE",
  32: "EPIPE",
  34: "ERANGE",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  40: "ELOOP",
  64: "ENONET",
  71: "EPROTO",
  88: "ENOTSOCK",
  89: "EDESTADDRREQ",
  90: "EMSGSIZE",
  91: "EPROTOTYPE",
  92: "ENOPROTOOPT",
  93: "EPROTONOSUPPORT",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  100: "ENETDOWN",
  101: "ENETUNREACH",
  103: "ECONNABORTED",
  104: "ECONNRESET",
  105: "ENOBUFS",
  106: "EISCONN",
  107: "ENOTCONN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  112: "EHOSTDOWN",
  113: "EHOSTUNREACH",
  114: "EALREADY",
  115: "EINPROGRESS",
};

/** The symbolic name of an errno value, e.g. `errnoName(11) === "EAGAIN"`. */
export function errnoName(errno: number): string {
  return NAMES[errno] ?? `E#${errno}`;
}

/**
 * A failed libc call: which call, the errno number and its name.
 * `detail` says what the call was for (an address, an fd), so a log line
 * stands on its own.
 */
export class SyscallError extends Error {
  /** The libc function that failed, e.g. `"bind"`. */
  readonly call: string;
  /** errno as read right after the call. */
  readonly errno: number;
  /** errno's name, e.g. `"EADDRINUSE"`. */
  readonly code: string;

  /**
   * Describes the failed `call` by its errno.
   *
   * @param call the libc function that failed, e.g. `"bind"`
   * @param errno errno as read right after the call
   * @param detail what it was called on, e.g. an address
   */
  constructor(call: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${call}${detail ? ` ${detail}` : ""}: ${code} (errno ${errno})`);
    this.name = "SyscallError";
    this.call = call;
    this.errno = errno;
    this.code = code;
  }
}
