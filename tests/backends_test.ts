/**
 * One behavioural suite, run for each readiness backend (epoll, poll,
 * select, and io_uring where this machine has it): the server end to end, then the backend contract on socket
 * pairs (level-triggered reports, maxEvents, tokens, changes made while a
 * wait is parked on the thread pool), timers, and edge mode. Then what only
 * one backend does: select's FD_SETSIZE wall, poll's POLLNVAL.
 */
import assert from "node:assert/strict";
import type { Backend, BackendName } from "../reactor/backend.ts";
import { EpollBackend } from "../reactor/epoll.ts";
import { PollBackend } from "../reactor/poll.ts";
import { IoUringBackend } from "../reactor/io_uring.ts";
import { probeIoUring } from "../syscalls/io_uring.ts";
import { Reactor } from "../reactor/reactor.ts";
import { Interest, Ready } from "../reactor/interest.ts";
import { FdSetsizeError, SelectBackend } from "../reactor/select.ts";
import {
  EPOLLERR,
  EPOLLET,
  EPOLLHUP,
  EPOLLIN,
  EPOLLONESHOT,
  EPOLLOUT,
  F_DUPFD_CLOEXEC,
  FD_SETSIZE,
} from "../syscalls/constants.ts";
import { SyscallError } from "../syscalls/errno.ts";
import { close, fcntl, recv, send } from "../syscalls/libc.ts";
import { socketPair } from "../syscalls/socket.ts";
import { withServer } from "./support/server.ts";
import {
  dial,
  echoClients,
  pattern,
  readExactly,
  readPatternSlowly,
  sleep,
  waitFor,
  writeAll,
  writePattern,
} from "./support/net.ts";

const IO_URING = probeIoUring();
if (!IO_URING.ok) console.warn(`io_uring backend not tested: ${IO_URING.reason}`);
const BACKENDS: readonly BackendName[] = IO_URING.ok
  ? ["epoll", "poll", "select", "io_uring"]
  : ["epoll", "poll", "select"];
const ONE = new Uint8Array([1]);
const KB = new Uint8Array(1024);

function makeBackend(name: BackendName, maxEvents = 16): Backend {
  switch (name) {
    case "epoll":
      return new EpollBackend(maxEvents);
    case "poll":
      return new PollBackend(maxEvents);
    case "select":
      return new SelectBackend(maxEvents);
    case "io_uring":
      return new IoUringBackend(maxEvents);
  }
}

/** A nonblocking AF_UNIX pair, and a function that closes both ends. */
function pair(): [number, number, () => void] {
  const [a, b] = socketPair();
  return [a, b, () => {
    close(a);
    close(b);
  }];
}

interface Result {
  fd: number;
  events: number;
  token: number;
}

function results(be: Backend, n: number): Result[] {
  const out: Result[] = [];
  for (let i = 0; i < n; i++) {
    out.push({ fd: be.resultFd(i), events: be.resultEvents(i), token: be.resultToken(i) });
  }
  return out;
}

/** Holds the JS thread for `ms`, so promise resolutions queue up meanwhile. */
function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy: the point is to not yield
  }
}

/** Drains whatever is readable on a nonblocking fd. */
function drain(fd: number): number {
  const buf = new Uint8Array(65536);
  let total = 0;
  for (;;) {
    const n = recv(fd, buf, buf.length, 0);
    if (n <= 0) return total;
    total += n;
  }
}

for (const name of BACKENDS) {
  Deno.test(`${name}: echo round trip`, async () => {
    await withServer({ backend: name }, async (server) => {
      assert.equal(server.reactor.backend.name, name);
      const conn = await dial(server.port);
      const msg = new TextEncoder().encode(`hello from the ${name} backend\n`);
      await writeAll(conn, msg);
      assert.deepEqual(await readExactly(conn, msg.length), msg);
      conn.close();
      assert.ok(await waitFor(() => server.connectionCount === 0), "server did not see the close");
      const c = server.context.counters;
      assert.equal(c.accepted, 1);
      assert.equal(c.closed, 1);
      assert.equal(c.bytesIn, msg.length);
      assert.equal(c.bytesOut, msg.length);
      assert.equal(server.reactor.counters.handlerErrors, 0);
    });
  });

  Deno.test(`${name}: 100 concurrent clients, byte for byte`, async () => {
    await withServer({ backend: name }, async (server) => {
      await echoClients(server.port, 100, (i) => 16384 + i * 37);
      assert.ok(await waitFor(() => server.connectionCount === 0), "connections left open");
      assert.equal(server.context.counters.accepted, 100);
      assert.equal(server.context.counters.closed, 100);
    });
  });

  Deno.test(`${name}: 16 MiB to a slow reader: in order, EPOLLOUT armed then disarmed`, async () => {
    const limits = { highWaterMark: 1 << 20, lowWaterMark: 256 << 10, maxOutputBytes: 16 << 20 };
    await withServer({ backend: name, limits }, async (server) => {
      const total = 16 << 20;
      const conn = await dial(server.port);
      const c = server.context.counters;
      const writer = writePattern(conn, 9, total);
      await sleep(300); // read nothing yet: the server's sends must hit EAGAIN
      assert.ok(c.writableArms >= 1, "EPOLLOUT was never armed while the reader slept");
      const got = await readPatternSlowly(conn, 9, total);
      await writer;
      assert.equal(got, total);
      assert.ok(c.readPauses >= 1, "backpressure never paused reading");
      assert.ok(await waitFor(() => c.writableDisarms === c.writableArms), "EPOLLOUT left armed");
      assert.ok(
        c.peakOutputBytes <= limits.highWaterMark + server.context.readBuffer.length,
        `output buffer reached ${c.peakOutputBytes} bytes`,
      );
      conn.close();
    });
  });

  Deno.test(`${name}: LT: 2 KB arrive, 1 KB read, the fd is reported again`, async () => {
    const be = makeBackend(name);
    const [a, b, done] = pair();
    try {
      be.add(a, EPOLLIN, 7);
      assert.equal(be.wait(0), 0, "nothing sent yet");
      assert.equal(send(b, new Uint8Array(2048), 2048, 0), 2048);
      assert.equal(be.wait(0), 1);
      assert.deepEqual(results(be, 1), [{ fd: a, events: EPOLLIN, token: 7 }]);
      assert.equal(recv(a, KB, 1024, 0), 1024);
      assert.equal(be.wait(0), 1, "level-triggered: 1 KB still unread, so reported again");
      assert.equal(be.resultFd(0), a);
      assert.equal(await be.waitBlocking(1000), 1, "the parked wait sees it too");
      assert.deepEqual(results(be, 1), [{ fd: a, events: EPOLLIN, token: 7 }]);
      assert.equal(recv(a, KB, 1024, 0), 1024);
      assert.equal(be.wait(0), 0, "all read: silence");
      const t0 = performance.now();
      assert.equal(be.wait(30), 0, "a timeout with nothing ready returns 0");
      assert.ok(performance.now() - t0 >= 25, "the timeout was not waited out");
    } finally {
      be.close();
      done();
    }
  });

  Deno.test(`${name}: a peer's close wakes the fd and recv then reads EOF`, () => {
    const be = makeBackend(name);
    const [a, b] = socketPair();
    try {
      be.add(a, EPOLLIN, 1);
      close(b);
      assert.equal(be.wait(1000), 1);
      assert.equal(be.resultFd(0), a);
      assert.ok((be.resultEvents(0) & (EPOLLIN | EPOLLHUP)) !== 0, "neither EPOLLIN nor EPOLLHUP");
      assert.equal(recv(a, KB, 1024, 0), 0, "EOF");
    } finally {
      be.close();
      close(a);
    }
  });

  Deno.test(`${name}: results beyond maxEvents come in the next waits, none starved`, () => {
    const be = makeBackend(name, 2);
    const pairs = Array.from({ length: 5 }, () => pair());
    try {
      pairs.forEach(([a, b], i) => {
        be.add(a, EPOLLIN, 100 + i);
        send(b, ONE, 1, 0);
      });
      const seen = new Set<number>();
      for (let round = 0; round < 3; round++) {
        const n = be.wait(0);
        assert.equal(n, 2, `round ${round}: ${n} results with maxEvents 2 and 5 ready`);
        for (const r of results(be, n)) {
          const i = pairs.findIndex(([a]) => a === r.fd);
          assert.ok(i >= 0, `result for unknown fd ${r.fd}`);
          assert.equal(r.token, 100 + i);
          seen.add(r.fd);
        }
        // Nothing is read: level-triggered, all five stay ready throughout.
      }
      assert.equal(seen.size, 5, `only fds ${[...seen]} reported in three waits of two`);
    } finally {
      be.close();
      for (const [, , done] of pairs) done();
    }
  });

  Deno.test(`${name}: add, modify and remove keep fds, bits and tokens straight`, () => {
    const be = makeBackend(name);
    const [a, a1, doneA] = pair();
    const [b, b1, doneB] = pair();
    const [c, c1, doneC] = pair();
    try {
      be.add(a, EPOLLIN, 1);
      be.add(b, EPOLLIN, 2);
      be.add(c, EPOLLIN, 3);
      // Removing the first entry moves the last into its place (poll).
      be.remove(a);
      send(a1, ONE, 1, 0);
      send(c1, ONE, 1, 0);
      assert.equal(be.wait(0), 1);
      assert.deepEqual(results(be, 1), [{ fd: c, events: EPOLLIN, token: 3 }]);
      // Writable interest and a new token; the unread byte no longer counts.
      be.modify(c, EPOLLOUT, 30);
      assert.equal(be.wait(0), 1);
      assert.deepEqual(results(be, 1), [{ fd: c, events: EPOLLOUT, token: 30 }]);
      // No interest at all: silent although readable and writable.
      be.modify(c, 0, 31);
      assert.equal(be.wait(0), 0);
      send(b1, ONE, 1, 0);
      assert.equal(be.wait(0), 1);
      assert.deepEqual(results(be, 1), [{ fd: b, events: EPOLLIN, token: 2 }]);
      be.remove(b);
      be.remove(c);
      assert.equal(be.wait(0), 0, "nothing registered reports nothing");
      // The same fd can come back under a new token.
      be.add(a, EPOLLIN, 4);
      assert.equal(be.wait(0), 1);
      assert.deepEqual(results(be, 1), [{ fd: a, events: EPOLLIN, token: 4 }]);
      assert.throws(() => be.add(a, EPOLLIN, 5), /EEXIST/);
      be.remove(a);
      assert.throws(() => be.remove(a), /ENOENT/);
    } finally {
      be.close();
      doneA();
      doneB();
      doneC();
    }
  });

  Deno.test(`${name}: changes made while a wait is parked never misreport an fd`, async () => {
    const be = makeBackend(name);
    const [w, w1, doneW] = pair(); // plays the reactor's eventfd waker
    const [a, , doneA] = pair();
    const [c, c1] = socketPair();
    const [d, d1, doneD] = pair();
    const [e, , doneE] = pair();
    let reused = -1;
    try {
      be.add(w, EPOLLIN, 1);
      be.add(a, EPOLLIN, 2);
      be.add(c, EPOLLIN, 3);

      // 1. As the reactor does while parked: remove an fd (poll moves the
      // last entry, c, into its slot), add another, then data arrives for c.
      let parked = be.waitBlocking(5000);
      await sleep(20); // let the pool thread enter the call
      be.remove(a);
      be.add(d, EPOLLIN, 4);
      send(c1, ONE, 1, 0);
      let n = await parked;
      let got = results(be, n);
      assert.deepEqual(got, [{ fd: c, events: EPOLLIN, token: 3 }], "readiness given to c");
      drain(c);

      // 2. The kernel returns for c, and before JS reads the result c is
      // removed, closed, and its number reused by a new socket (a new
      // connection): the readiness must not be credited to the newcomer.
      parked = be.waitBlocking(5000);
      await sleep(20);
      send(c1, ONE, 1, 0);
      spin(30); // the pool thread returns meanwhile; JS cannot see it yet
      be.remove(c);
      close(c);
      reused = fcntl(e, F_DUPFD_CLOEXEC, c);
      assert.equal(reused, c, "the fd number was not reused");
      be.add(reused, EPOLLIN, 5);
      n = await parked;
      got = results(be, n);
      assert.ok(
        !got.some((r) => r.token === 5 || r.fd === d),
        `readiness of the closed socket misreported: ${JSON.stringify(got)}`,
      );
      assert.equal(be.wait(0), 0, "the new socket and d have no data");

      // 3. Interest dropped while parked: the parked wait may still report d
      // (it watched a copy); the reactor masks that at dispatch (tested
      // below through the Reactor). The next wait uses the live list.
      parked = be.waitBlocking(5000);
      await sleep(20);
      be.modify(d, 0, 4);
      send(d1, ONE, 1, 0);
      await sleep(20);
      send(w1, ONE, 1, 0); // the wake
      n = await parked;
      got = results(be, n);
      assert.ok(
        got.every((r) => r.fd !== d || r.token === 4),
        `d misreported: ${JSON.stringify(got)}`,
      );
      assert.equal(be.wait(0), 1, "the next wait is on the live list: only the waker");
      assert.deepEqual(results(be, 1), [{ fd: w, events: EPOLLIN, token: 1 }]);
      be.modify(d, EPOLLIN, 4);
      assert.equal(be.wait(0), 2, "interest back: the waker and d");
    } finally {
      be.close();
      if (reused >= 0) close(reused);
      else close(c);
      close(c1);
      doneW();
      doneA();
      doneD();
      doneE();
    }
  });

  Deno.test(`${name}: Reactor dispatch masks results by the interest an earlier callback set`, async () => {
    // Two fds ready in one batch; whichever handler runs first drops the
    // other's interest. The other's result is already in the batch: the
    // reactor must drop it (one mask, in dispatch, for every backend).
    const reactor = await Reactor.create({ backend: name });
    const [a, a1, doneA] = pair();
    const [b, b1, doneB] = pair();
    try {
      const calls: string[] = [];
      reactor.register(a, {
        ready() {
          drain(a);
          calls.push("a");
          reactor.reregister(b, Interest.NONE);
        },
      }, Interest.READABLE);
      reactor.register(b, {
        ready() {
          drain(b);
          calls.push("b");
          reactor.reregister(a, Interest.NONE);
        },
      }, Interest.READABLE);
      send(a1, ONE, 1, 0);
      send(b1, ONE, 1, 0);
      await sleep(10);
      const running = reactor.run();
      assert.ok(await waitFor(() => calls.length >= 1), "neither handler ran");
      await sleep(30);
      reactor.stop();
      await running;
      assert.deepEqual(calls.length, 1, `handlers ran ${calls.length} times: ${calls.slice(0, 4)}`);
      assert.ok(reactor.counters.dropped >= 1, "no result was dropped");
      reactor.deregister(a);
      reactor.deregister(b);
    } finally {
      reactor.close();
      doneA();
      doneB();
    }
  });

  Deno.test(`${name}: an fd registered while the loop is parked is served at once`, async () => {
    const reactor = await Reactor.create({ backend: name });
    const running = reactor.run();
    const [a, b, done] = pair();
    try {
      assert.ok(await waitFor(() => reactor.counters.waits >= 1), "the loop did not start");
      await sleep(30); // idle: parked on the pool with no timer, i.e. forever
      send(b, ONE, 1, 0);
      const t0 = performance.now();
      const got = await new Promise<number>((resolve) => {
        reactor.register(a, {
          ready(events) {
            reactor.deregister(a);
            resolve(events);
          },
        }, Interest.READABLE);
      });
      assert.equal(got & Ready.READABLE, Ready.READABLE);
      assert.ok(performance.now() - t0 < 1000, "the parked wait was not woken");
      assert.ok(reactor.counters.parkedWaits >= 1, "the loop never parked");
    } finally {
      reactor.stop();
      await running;
      reactor.close();
      done();
    }
  });

  Deno.test(`${name}: timers fire while the loop is idle`, async () => {
    const reactor = await Reactor.create({ backend: name });
    const running = reactor.run();
    try {
      await sleep(30); // idle and parked
      const t0 = performance.now();
      const fired = await new Promise<number>((resolve) => {
        reactor.setTimer(60, () => resolve(performance.now()));
      });
      const elapsed = fired - t0;
      assert.ok(elapsed >= 55, `fired after ${elapsed.toFixed(1)} ms, before its 60 ms`);
      assert.ok(elapsed < 1000, `fired after ${elapsed.toFixed(1)} ms`);
      const order: number[] = [];
      await new Promise<void>((resolve) => {
        reactor.setTimer(40, () => {
          order.push(40);
          resolve();
        });
        reactor.setTimer(10, () => order.push(10));
      });
      assert.deepEqual(order, [10, 40]);
      assert.ok(reactor.counters.parkedWaits >= 1, "the loop never parked");
    } finally {
      reactor.stop();
      await running;
      reactor.close();
    }
  });

  Deno.test(`${name}: edge "auto" is edge-triggered only where epoll is; a Server defaults to it`, async () => {
    const auto = await Reactor.create({ backend: name, edge: "auto" });
    const plain = await Reactor.create({ backend: name });
    try {
      assert.equal(auto.edge, name === "epoll");
      assert.equal(plain.edge, false, "a bare Reactor is level-triggered unless asked");
    } finally {
      auto.close();
      plain.close();
    }
    await withServer({ backend: name }, async (server) => {
      assert.equal(server.reactor.edge, name === "epoll");
      await echoClients(server.port, 20, (i) => 1 + i * 3001);
    });
    await withServer({ backend: name, edge: false }, async (server) => {
      assert.equal(server.reactor.edge, false);
      await echoClients(server.port, 5, (i) => 1 + i * 3001);
    });
  });

  Deno.test(`${name}: edge-triggered mode needs epoll`, async () => {
    if (name === "epoll") {
      const reactor = await Reactor.create({ backend: name, edge: true });
      assert.equal(reactor.edge, true);
      reactor.close();
      return;
    }
    await assert.rejects(
      Reactor.create({ backend: name, edge: true }),
      new RegExp(`edge-triggered mode needs the epoll backend; ${name} is level-triggered only`),
    );
    const be = makeBackend(name);
    const [a, , done] = pair();
    try {
      const message =
        `${name} is level-triggered only: EPOLLET/EPOLLONESHOT need the epoll backend`;
      assert.throws(() => be.add(a, EPOLLIN | EPOLLET, 1), { message });
      assert.throws(() => be.add(a, EPOLLIN | EPOLLONESHOT, 1), { message });
      be.add(a, EPOLLIN, 1);
      assert.throws(() => be.modify(a, EPOLLIN | EPOLLET, 1), { message });
    } finally {
      be.close();
      done();
    }
  });
}

/** The lowest free fd >= `min`, a duplicate of `fd`. */
function dupAtLeast(fd: number, min: number): number {
  const high = fcntl(fd, F_DUPFD_CLOEXEC, min);
  assert.ok(high >= min, `F_DUPFD_CLOEXEC ${min} gave ${high}`);
  return high;
}

Deno.test("select: an fd >= FD_SETSIZE is refused with a clear error; lower fds keep working", async () => {
  const [a, b, done] = pair();
  const high = dupAtLeast(a, 1100);
  const edge = dupAtLeast(a, FD_SETSIZE - 1); // fd 1023, the last bit of the set
  const be = new SelectBackend(16);
  try {
    const message =
      `select: fd ${high} is at or above FD_SETSIZE (1024); use --backend epoll or poll`;
    assert.throws(() => be.add(high, EPOLLIN, 1), (e: unknown) => {
      assert.ok(e instanceof FdSetsizeError && e instanceof SyscallError);
      assert.equal(e.message, message);
      assert.equal(e.fd, high);
      assert.equal(e.code, "EINVAL");
      return true;
    });
    assert.equal(be.maxFd, -1, "the refused fd left no trace");
    if (edge === FD_SETSIZE - 1) {
      be.add(edge, EPOLLIN, 2);
      send(b, ONE, 1, 0);
      assert.equal(be.wait(0), 1, "fd 1023 is watched");
      assert.deepEqual(results(be, 1), [{ fd: edge, events: EPOLLIN, token: 2 }]);
      be.remove(edge);
      drain(a);
    }

    // Through the reactor: the one registration fails, the loop serves the rest.
    const reactor = await Reactor.create({ backend: "select" });
    const running = reactor.run();
    const [c, d, doneCD] = pair();
    try {
      assert.throws(() => reactor.register(high, { ready() {} }, Interest.READABLE), { message });
      assert.equal(reactor.isRegistered(high), false);
      const got = new Promise<number>((resolve) => {
        reactor.register(c, {
          ready() {
            resolve(drain(c));
          },
        }, Interest.READABLE);
      });
      send(d, KB, 100, 0);
      assert.equal(await got, 100);
      reactor.deregister(c);
    } finally {
      reactor.stop();
      await running;
      reactor.close();
      doneCD();
    }
  } finally {
    be.close();
    close(high);
    close(edge);
    done();
  }
});

Deno.test("poll: an fd closed while still registered is reported as EPOLLERR|EPOLLHUP", () => {
  const be = new PollBackend(16);
  const [a, b] = socketPair();
  try {
    be.add(a, EPOLLIN, 9);
    close(a); // a bug in a caller: close before remove
    assert.equal(be.wait(0), 1);
    assert.deepEqual(results(be, 1), [{ fd: a, events: EPOLLERR | EPOLLHUP, token: 9 }]);
    be.remove(a);
    assert.equal(be.wait(0), 0);
  } finally {
    be.close();
    close(b);
  }
});

Deno.test("select: an fd closed while still registered is reported, not a failed wait", () => {
  const be = new SelectBackend(16);
  const [a, b] = socketPair();
  const [c, d, done] = pair();
  try {
    be.add(a, EPOLLIN, 9);
    be.add(c, EPOLLIN, 10);
    close(a); // select would fail with EBADF for every fd
    send(d, ONE, 1, 0);
    assert.equal(be.wait(0), 1);
    assert.deepEqual(results(be, 1), [{ fd: a, events: EPOLLERR | EPOLLHUP, token: 9 }]);
    be.remove(a);
    assert.equal(be.wait(0), 1, "with the culprit removed the others are served");
    assert.deepEqual(results(be, 1), [{ fd: c, events: EPOLLIN, token: 10 }]);
  } finally {
    be.close();
    close(b);
    done();
  }
});

Deno.test("select server: a connection on an fd >= 1024 is closed and logged; the server serves on", async () => {
  await withServer({ backend: "select" }, async (server) => {
    // Fill the fd table past FD_SETSIZE so the next accepted fd lands above it.
    // accept() takes the lowest free fd, so fill every hole, not just the top.
    const [a, , done] = pair();
    const fillers: number[] = [];
    for (let fd = 0; fd < FD_SETSIZE + 8;) {
      fd = fcntl(a, F_DUPFD_CLOEXEC, 0);
      assert.ok(fd >= 0, "F_DUPFD failed");
      fillers.push(fd);
    }
    try {
      const refused = await dial(server.port);
      const buf = new Uint8Array(8);
      const got = await Promise.race([
        refused.read(buf).catch(() => null),
        sleep(5000).then(() => "still open" as const),
      ]);
      assert.equal(got, null, "a connection select cannot watch is closed, not left hanging");
      refused.close();
    } finally {
      for (const fd of fillers) close(fd);
      done();
    }
    // Back under FD_SETSIZE: served as usual, the listener never went away.
    const conn = await dial(server.port);
    await writeAll(conn, pattern(1, 1000));
    assert.deepEqual(await readExactly(conn, 1000), pattern(1, 1000));
    conn.close();
    assert.equal(server.reactor.counters.handlerErrors, 0);
    assert.ok(await waitFor(() => server.connectionCount === 0));
  });
});
