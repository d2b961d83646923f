import assert from "node:assert/strict";
import {
  AF_INET,
  AF_INET6,
  decodeSockaddr,
  EADDRINUSE,
  encodeSockaddr,
  epollEventLayout,
  errnoName,
  isNonBlocking,
  listenTcp,
  localAddress,
  MSG_NOSIGNAL,
  openFileLimit,
  parseHost,
  parseIPv6,
  recv,
  send,
  setNonBlocking,
  setOpenFileLimit,
  socketError,
  socketPair,
  SyscallError,
} from "../syscalls/mod.ts";
import { close, errno, fcntl, pipe2, read, setsockopt } from "../syscalls/libc.ts";
import { connectTcp } from "../syscalls/socket.ts";
import { EBADF, ECONNREFUSED } from "../syscalls/errno.ts";
import { SO_SNDBUF, SOL_SOCKET } from "../syscalls/constants.ts";
import { EpollBackend } from "../reactor/epoll.ts";
import { EPOLLOUT } from "../syscalls/constants.ts";

Deno.test("layout: epoll_event is 12 bytes packed on x86_64, 16 on aarch64", () => {
  assert.deepEqual(epollEventLayout("x86_64"), { size: 12, dataOffset: 4 });
  assert.deepEqual(epollEventLayout("aarch64"), { size: 16, dataOffset: 8 });
  assert.throws(() => epollEventLayout("riscv64"), /unsupported architecture/);
});

Deno.test("layout: sockaddr_in / sockaddr_in6 encode and decode", () => {
  const v4 = encodeSockaddr(parseHost("127.0.0.1")!, 8080);
  assert.equal(v4.length, 16);
  assert.deepEqual([...v4.subarray(0, 8)], [AF_INET, 0, 0x1f, 0x90, 127, 0, 0, 1]);
  assert.deepEqual(decodeSockaddr(v4), { family: AF_INET, port: 8080, host: "127.0.0.1" });
  const v6 = encodeSockaddr(parseHost("::1")!, 443);
  assert.equal(v6.length, 28);
  assert.equal(decodeSockaddr(v6).family, AF_INET6);
  assert.equal(decodeSockaddr(v6).port, 443);
  assert.equal(decodeSockaddr(v6).host, "::1");
});

Deno.test("layout: IPv6 parsing", () => {
  assert.deepEqual([...parseIPv6("::")!], new Array(16).fill(0));
  assert.equal(parseIPv6("2001:db8::1")![15], 1);
  assert.equal(parseIPv6("::ffff:10.0.0.1")![12], 10);
  assert.equal(parseIPv6("1::2::3"), null);
  assert.equal(parseIPv6("12345::"), null);
  assert.equal(parseHost("example.com"), null);
});

Deno.test("errno: read right after the failing call, with its name", () => {
  assert.equal(close(999999), -1);
  assert.equal(errno(), EBADF);
  assert.equal(errnoName(EBADF), "EBADF");
  assert.equal(errnoName(4242), "E#4242");
});

Deno.test("SyscallError: bind to a used address names the call, errno and address", () => {
  const fd = listenTcp({ host: "127.0.0.1", port: 0 });
  const { port } = localAddress(fd);
  try {
    assert.throws(() => listenTcp({ host: "127.0.0.1", port }), (e: unknown) => {
      assert.ok(e instanceof SyscallError);
      assert.equal(e.call, "bind");
      assert.equal(e.errno, EADDRINUSE);
      assert.equal(e.code, "EADDRINUSE");
      assert.match(e.message, new RegExp(`bind 127\\.0\\.0\\.1:${port}: EADDRINUSE`));
      return true;
    });
  } finally {
    close(fd);
  }
});

Deno.test("sockets: listen on IPv6 loopback and connect to it", () => {
  const fd = listenTcp({ host: "::1", port: 0 });
  const { port, host } = localAddress(fd);
  assert.equal(host, "::1");
  const c = connectTcp("::1", port);
  assert.ok(c.fd >= 0);
  close(c.fd);
  close(fd);
});

Deno.test("sockets: nonblocking connect: EINPROGRESS, then writable, then SO_ERROR", () => {
  const lfd = listenTcp({ host: "127.0.0.1", port: 0 });
  const { port } = localAddress(lfd);
  const { fd } = connectTcp("127.0.0.1", port);
  const ep = new EpollBackend(4);
  ep.add(fd, EPOLLOUT, 1);
  // The kernel completes a loopback connect in microseconds; the generous
  // timeout only keeps a starved softirq thread on a loaded machine from
  // failing the test, while a connect that never completes still does.
  assert.equal(ep.wait(5000), 1);
  assert.equal(socketError(fd), 0, "connected");
  close(fd);
  close(lfd);
  // A port nobody listens on: SO_ERROR says ECONNREFUSED.
  const refused = connectTcp("127.0.0.1", port);
  ep.add(refused.fd, EPOLLOUT, 2);
  assert.equal(ep.wait(5000), 1);
  assert.equal(socketError(refused.fd), ECONNREFUSED);
  close(refused.fd);
  ep.close();
});

Deno.test("fcntl: O_NONBLOCK set with F_GETFL/F_SETFL and read back", () => {
  const fds = new Int32Array(2);
  assert.equal(pipe2(new Uint8Array(fds.buffer), 0), 0);
  assert.equal(isNonBlocking(fds[0]), false);
  setNonBlocking(fds[0]);
  assert.equal(isNonBlocking(fds[0]), true);
  assert.equal(read(fds[0], new Uint8Array(8), 8), -1, "no data: a nonblocking read fails");
  assert.equal(errnoName(errno()), "EAGAIN");
  assert.ok(fcntl(fds[0], 3, 0) >= 0);
  close(fds[0]);
  close(fds[1]);
});

Deno.test("u32 lengths: large sends and receives arrive with exact counts", () => {
  const [a, b] = socketPair();
  const big = new Int32Array([4 << 20]);
  setsockopt(a, SOL_SOCKET, SO_SNDBUF, new Uint8Array(big.buffer), 4);
  const data = new Uint8Array(3 << 20).map((_, i) => i * 7);
  let sent = 0;
  let got = 0;
  const buf = new Uint8Array(1 << 20);
  while (got < data.length) {
    if (sent < data.length) {
      const n = send(a, sent === 0 ? data : data.subarray(sent), data.length - sent, MSG_NOSIGNAL);
      if (n > 0) sent += n;
    }
    const m = recv(b, buf, buf.length, 0);
    if (m > 0) {
      assert.ok(m <= buf.length, `recv returned ${m} for a ${buf.length}-byte buffer`);
      for (let i = 0; i < m; i += 4099) assert.equal(buf[i], data[got + i]);
      got += m;
    }
  }
  assert.equal(got, data.length);
  close(a);
  close(b);
});

Deno.test("rlimit: RLIMIT_NOFILE read and set (soft limit only)", () => {
  const { soft, hard } = openFileLimit();
  assert.ok(soft > 0 && hard >= soft);
  setOpenFileLimit(soft - 1);
  assert.equal(openFileLimit().soft, soft - 1);
  setOpenFileLimit(soft);
  assert.equal(openFileLimit().soft, soft);
  assert.throws(() => setOpenFileLimit(hard + 1), SyscallError);
});
