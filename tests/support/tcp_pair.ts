/**
 * A connected loopback TCP pair made with our own syscalls (not Deno's
 * sockets): for tests that drive a Connection or a backend on a raw fd.
 *
 * @module
 */

import { SOCK_CLOEXEC, SOCK_NONBLOCK } from "../../syscalls/constants.ts";
import { EAGAIN, SyscallError } from "../../syscalls/errno.ts";
import { accept4, close, errno } from "../../syscalls/libc.ts";
import { connectTcp, listenTcp, localAddress } from "../../syscalls/socket.ts";
import { sleep } from "./net.ts";

/** The two ends of a loopback connection, and the listener that made it. */
export interface TcpPair {
  /** Our end: accepted, nonblocking, close-on-exec. */
  fd: number;
  /** The client end. */
  peer: number;
  /** The listener, still open: the caller closes it. */
  listener: number;
  /** The listener's port. */
  port: number;
}

/** Listens on 127.0.0.1, connects, accepts (waiting up to 10 s for the handshake). */
export async function tcpPair(): Promise<TcpPair> {
  const listener = listenTcp({ host: "127.0.0.1", port: 0 });
  const port = localAddress(listener).port;
  let peer = -1;
  try {
    peer = connectTcp("127.0.0.1", port).fd;
    const end = performance.now() + 10_000;
    for (;;) {
      const fd = accept4(listener, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) return { fd, peer, listener, port };
      const e = errno();
      if (e !== EAGAIN || performance.now() > end) {
        throw new SyscallError("accept4", e, "loopback pair");
      }
      await sleep(1); // the handshake has not reached the accept queue yet
    }
  } catch (e) {
    if (peer >= 0) close(peer);
    close(listener);
    throw e;
  }
}
