/**
 * Socket set-up helpers built on the raw bindings: listen, connect, options,
 * nonblocking mode, rlimits. These run once per socket, not per event, so they
 * check every return value and throw `SyscallError`.
 *
 * @module
 */

import * as c from "./constants.ts";
import { EINPROGRESS, SyscallError } from "./errno.ts";
import {
  bind,
  close,
  connect,
  errno,
  fcntl,
  getpeername,
  getrlimit,
  getsockname,
  getsockopt,
  listen,
  setrlimit,
  setsockopt,
  socket,
  socketpair,
} from "./libc.ts";
import {
  decodeSockaddr,
  encodeSockaddr,
  type IpAddress,
  parseHost,
  SOCKADDR_STORAGE_SIZE,
} from "./layout.ts";

/**
 * Throws `SyscallError` when a call returned -1; returns the result otherwise.
 * errno is read here, after every argument was evaluated: pass a `detail`
 * that makes no call (made beforehand), so nothing runs between the call and
 * the read.
 */
export function check(call: string, result: number, detail?: string): number {
  if (result < 0) throw new SyscallError(call, errno(), detail);
  return result;
}

const intBuf = new Int32Array(1);
const intBytes = new Uint8Array(intBuf.buffer);

/** `setsockopt` with an int value. */
export function setIntOption(fd: number, level: number, name: number, value: number): void {
  intBuf[0] = value;
  check("setsockopt", setsockopt(fd, level, name, intBytes, 4), `fd ${fd} option ${name}`);
}

/** `struct linger` { l_onoff: 1, l_linger: 0 }. */
const LINGER_ZERO = new Uint8Array(new Int32Array([1, 0]).buffer);

/**
 * Makes the coming close(2) of `fd` send RST, not FIN (SO_LINGER on with a
 * zero timeout): bytes not delivered must not let a stream look complete.
 * A failure is ignored: the close follows anyway.
 */
export function resetOnClose(fd: number): void {
  setsockopt(fd, c.SOL_SOCKET, c.SO_LINGER, LINGER_ZERO, 8);
}

/** `getsockopt` for an int value. */
export function getIntOption(fd: number, level: number, name: number): number {
  const len = new Uint32Array([4]);
  check(
    "getsockopt",
    getsockopt(fd, level, name, intBytes, new Uint8Array(len.buffer)),
    `fd ${fd} option ${name}`,
  );
  return intBuf[0];
}

/** Makes an fd nonblocking with F_GETFL then F_SETFL, and reads the flags back to be sure. */
export function setNonBlocking(fd: number): void {
  const flags = check("fcntl", fcntl(fd, c.F_GETFL, 0), `F_GETFL fd ${fd}`);
  check("fcntl", fcntl(fd, c.F_SETFL, flags | c.O_NONBLOCK), `F_SETFL fd ${fd}`);
  if (!isNonBlocking(fd)) throw new Error(`fd ${fd} is still blocking after F_SETFL`);
}

/** Whether O_NONBLOCK is set on an fd. */
export function isNonBlocking(fd: number): boolean {
  return (check("fcntl", fcntl(fd, c.F_GETFL, 0), `F_GETFL fd ${fd}`) & c.O_NONBLOCK) !== 0;
}

/** Options for `listenTcp`. */
export interface ListenOptions {
  /** IPv4 or IPv6 address, or `localhost`. */
  host: string;
  /** 0 picks a free port (read it back with `localAddress`). */
  port: number;
  /** listen(2) backlog; the kernel clamps it to net.core.somaxconn. */
  backlog?: number;
  /** SO_REUSEPORT, for several worker processes on one port. */
  reusePort?: boolean;
}

/** Formats host:port, with brackets for IPv6. */
export function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Resolves a host for bind/connect or throws a readable error. */
export function resolveHost(host: string): IpAddress {
  const addr = parseHost(host);
  if (!addr) {
    throw new Error(`not an IP address: ${JSON.stringify(host)} (use e.g. 127.0.0.1 or ::1)`);
  }
  return addr;
}

/**
 * A nonblocking, close-on-exec listening TCP socket with SO_REUSEADDR (set
 * before bind, so a restart does not trip over TIME_WAIT). Closes the socket
 * again if any step fails.
 */
export function listenTcp(opts: ListenOptions): number {
  const addr = resolveHost(opts.host);
  const fd = check(
    "socket",
    socket(addr.family, c.SOCK_STREAM | c.SOCK_NONBLOCK | c.SOCK_CLOEXEC, 0),
  );
  try {
    setIntOption(fd, c.SOL_SOCKET, c.SO_REUSEADDR, 1);
    if (opts.reusePort) setIntOption(fd, c.SOL_SOCKET, c.SO_REUSEPORT, 1);
    if (addr.family === c.AF_INET6) setIntOption(fd, c.IPPROTO_IPV6, c.IPV6_V6ONLY, 1);
    const sa = encodeSockaddr(addr, opts.port);
    // Made before the calls: `check` reads errno after its arguments are evaluated.
    const where = formatAddress(opts.host, opts.port);
    check("bind", bind(fd, sa, sa.length), where);
    check("listen", listen(fd, opts.backlog ?? c.SOMAXCONN), where);
    return fd;
  } catch (e) {
    close(fd);
    throw e;
  }
}

/** The local address of a socket (e.g. the port the kernel picked for port 0). */
export function localAddress(fd: number): { host: string; port: number; family: number } {
  const sa = new Uint8Array(SOCKADDR_STORAGE_SIZE);
  const len = new Uint32Array([SOCKADDR_STORAGE_SIZE]);
  check("getsockname", getsockname(fd, sa, new Uint8Array(len.buffer)), `fd ${fd}`);
  return decodeSockaddr(sa);
}

/** The address of a connected socket's peer (`getpeername`). */
export function peerAddress(fd: number): { host: string; port: number; family: number } {
  const sa = new Uint8Array(SOCKADDR_STORAGE_SIZE);
  const len = new Uint32Array([SOCKADDR_STORAGE_SIZE]);
  check("getpeername", getpeername(fd, sa, new Uint8Array(len.buffer)), `fd ${fd}`);
  return decodeSockaddr(sa);
}

/**
 * Starts a nonblocking TCP connect. Returns the fd and whether the connect is
 * still in progress (EINPROGRESS: wait for writable, then read SO_ERROR with
 * `socketError`).
 */
export function connectTcp(host: string, port: number): { fd: number; inProgress: boolean } {
  const addr = resolveHost(host);
  const fd = check(
    "socket",
    socket(addr.family, c.SOCK_STREAM | c.SOCK_NONBLOCK | c.SOCK_CLOEXEC, 0),
  );
  const sa = encodeSockaddr(addr, port);
  if (connect(fd, sa, sa.length) === 0) return { fd, inProgress: false };
  const e = errno();
  if (e === EINPROGRESS) return { fd, inProgress: true };
  close(fd);
  throw new SyscallError("connect", e, formatAddress(host, port));
}

/** SO_ERROR: 0 when a nonblocking connect succeeded, else its errno. */
export function socketError(fd: number): number {
  return getIntOption(fd, c.SOL_SOCKET, c.SO_ERROR);
}

/** A connected pair of nonblocking AF_UNIX stream sockets. */
export function socketPair(): [number, number] {
  const fds = new Int32Array(2);
  check(
    "socketpair",
    socketpair(
      c.AF_UNIX,
      c.SOCK_STREAM | c.SOCK_NONBLOCK | c.SOCK_CLOEXEC,
      0,
      new Uint8Array(fds.buffer),
    ),
  );
  return [fds[0], fds[1]];
}

/** The soft and hard RLIMIT_NOFILE. */
export function openFileLimit(): { soft: number; hard: number } {
  const r = new BigUint64Array(2);
  check("getrlimit", getrlimit(c.RLIMIT_NOFILE, new Uint8Array(r.buffer)), "RLIMIT_NOFILE");
  // RLIM_INFINITY is 2^64-1; cap it to something a Number holds exactly.
  const cap = (v: bigint) => (v > 0x7fffffffn ? 0x7fffffff : Number(v));
  return { soft: cap(r[0]), hard: cap(r[1]) };
}

/** Sets the soft RLIMIT_NOFILE, and the hard one when given (lowering it is for good). */
export function setOpenFileLimit(soft: number, hard?: number): void {
  const r = new BigUint64Array(2);
  check("getrlimit", getrlimit(c.RLIMIT_NOFILE, new Uint8Array(r.buffer)), "RLIMIT_NOFILE");
  r[0] = BigInt(soft);
  if (hard !== undefined) r[1] = BigInt(hard);
  check(
    "setrlimit",
    setrlimit(c.RLIMIT_NOFILE, new Uint8Array(r.buffer)),
    `RLIMIT_NOFILE soft ${soft}`,
  );
}
