/**
 * Acceptor on a real listening loopback socket and a real reactor: bursts,
 * the gate, a refusing onAccept, and close() leaving the listener to its
 * owner.
 *
 * Clients connect with nonblocking connect(2) before the acceptor looks;
 * the test waits (bounded) until the kernel's accept queue holds them all,
 * read from the listener's TCP_INFO, so "a burst" never depends on timing.
 */
import assert from "node:assert/strict";
import { Interest } from "../reactor/interest.ts";
import { Reactor } from "../reactor/reactor.ts";
import {
  IPPROTO_TCP,
  SHUT_RD,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  TCP_NODELAY,
} from "../syscalls/constants.ts";
import { EAGAIN } from "../syscalls/errno.ts";
import { accept4, close, errno, fcntl, getsockopt, recv, shutdown } from "../syscalls/libc.ts";
import {
  connectTcp,
  getIntOption,
  isNonBlocking,
  listenTcp,
  localAddress,
} from "../syscalls/socket.ts";
import { Acceptor } from "./accept.ts";
import { ConnectionCounters } from "./context.ts";
import { until } from "../tests/support/net.ts";

/** fcntl(2)'s F_GETFD: fails with EBADF on a closed fd. */
const F_GETFD = 1;
/** getsockopt(IPPROTO_TCP, TCP_INFO): struct tcp_info. */
const TCP_INFO = 11;
const TCP_LISTEN = 10;

/**
 * On a listening socket, tcp_info's tcpi_state is TCP_LISTEN and its
 * tcpi_unacked (offset 24) is the accept queue's length (Linux tcp_get_info).
 */
function acceptQueue(listener: number): { state: number; queued: number } {
  const info = new Uint8Array(232);
  const len = new Uint32Array([info.length]);
  assert.equal(getsockopt(listener, IPPROTO_TCP, TCP_INFO, info, new Uint8Array(len.buffer)), 0);
  return { state: info[0], queued: new DataView(info.buffer).getUint32(24, true) };
}

/** Resolves once `n` reactor timers fired one after another: at least `n` more waits. */
async function turns(reactor: Reactor, n: number): Promise<void> {
  let left = n;
  let done = false;
  const tick = () => {
    if (--left <= 0) done = true;
    else reactor.setTimer(1, tick);
  };
  reactor.setTimer(1, tick);
  await until(() => done, `${n} turns of the loop`);
}

/** An Acceptor that counts its ready() calls. */
class CountingAcceptor extends Acceptor {
  calls = 0;
  override ready(): void {
    this.calls++;
    super.ready();
  }
}

/** A reactor, a listener, clients, and what to release at the end. */
class Rig {
  readonly counters = new ConnectionCounters();
  readonly listener = listenTcp({ host: "127.0.0.1", port: 0, backlog: 128 });
  readonly port = localAddress(this.listener).port;
  readonly clients: number[] = [];
  /** Accepted fds, in order, with the ready() call each came from. */
  readonly accepted: { fd: number; call: number }[] = [];
  readonly acceptor: CountingAcceptor;
  running: Promise<void> | null = null;

  private constructor(readonly reactor: Reactor, onAccept?: (fd: number) => void) {
    this.acceptor = new CountingAcceptor(
      reactor,
      this.listener,
      this.counters,
      onAccept ?? ((fd) => this.accepted.push({ fd, call: this.acceptor.calls })),
    );
  }

  static async create(onAccept?: (rig: Rig, fd: number) => void): Promise<Rig> {
    const reactor = await Reactor.create();
    let rig: Rig | null = null;
    rig = new Rig(reactor, onAccept ? (fd) => onAccept(rig!, fd) : undefined);
    return rig;
  }

  /** Connects `n` clients, one after the other, each in the accept queue before the next. */
  async connect(n: number): Promise<number[]> {
    const fds: number[] = [];
    for (let i = 0; i < n; i++) {
      const queued = acceptQueue(this.listener).queued;
      const accepted = this.counters.accepted;
      const { fd } = connectTcp("127.0.0.1", this.port);
      this.clients.push(fd);
      fds.push(fd);
      await until(
        () => acceptQueue(this.listener).queued > queued || this.counters.accepted > accepted,
        "a connection to reach the accept queue (or the acceptor)",
      );
    }
    return fds;
  }

  run(): void {
    this.running = this.reactor.run();
  }

  async dispose(): Promise<void> {
    this.reactor.stop();
    if (this.running) {
      const running = this.running;
      let done = false;
      running.then(() => (done = true));
      await until(() => done, "run() to resolve after stop()");
    }
    this.acceptor.close();
    for (const { fd } of this.accepted) close(fd);
    for (const fd of this.clients) close(fd);
    close(this.listener);
    this.reactor.close();
  }
}

/** What a client sees: "open" (EAGAIN), "eof", or an errno. */
function clientState(fd: number): string {
  const n = recv(fd, new Uint8Array(16), 16, 0);
  if (n === 0) return "eof";
  if (n > 0) return `data ${n}`;
  const e = errno();
  return e === EAGAIN ? "open" : `errno ${e}`;
}

Deno.test("Acceptor: a burst of waiting connections is taken in one ready() call, each nonblocking with TCP_NODELAY", async () => {
  const rig = await Rig.create();
  try {
    const n = 32;
    await rig.connect(n);
    assert.equal(acceptQueue(rig.listener).queued, n, "all waiting before the acceptor looks");
    rig.acceptor.open();
    rig.run();
    await until(() => rig.accepted.length === n, `${n} accepts`);
    await turns(rig.reactor, 3);
    assert.equal(rig.acceptor.calls, 1, "one ready() call");
    assert.ok(rig.accepted.every((a) => a.call === 1));
    assert.equal(rig.counters.accepted, n);
    assert.equal(acceptQueue(rig.listener).queued, 0);
    for (const { fd } of rig.accepted) {
      assert.ok(isNonBlocking(fd), `fd ${fd} is blocking`);
      assert.notEqual(
        getIntOption(fd, IPPROTO_TCP, TCP_NODELAY),
        0,
        `fd ${fd} without TCP_NODELAY`,
      );
    }
  } finally {
    await rig.dispose();
  }
});

Deno.test("Acceptor: a gate returning false pauses accepting (interest NONE), and resume() takes the connections that waited", async () => {
  const rig = await Rig.create();
  try {
    let open = true;
    rig.acceptor.gate = () => open && rig.accepted.length < 3;
    await rig.connect(5);
    rig.acceptor.open();
    rig.run();
    await until(() => rig.accepted.length === 3, "3 accepts");
    assert.equal(rig.acceptor.paused, true);
    // Level-triggered and still readable (2 connections wait): with a read
    // interest it would be reported on every wait.
    await turns(rig.reactor, 10);
    assert.equal(rig.acceptor.calls, 1, "not reported again: interest NONE");
    assert.equal(rig.accepted.length, 3);
    assert.equal(acceptQueue(rig.listener).queued, 2, "the others wait in the kernel");
    assert.equal(rig.reactor.isRegistered(rig.listener), true, "paused, still registered");

    rig.acceptor.gate = () => open;
    rig.acceptor.resume();
    assert.equal(rig.acceptor.paused, false);
    await until(() => rig.accepted.length === 5, "the 2 waiting connections");
    assert.equal(acceptQueue(rig.listener).queued, 0);
    assert.equal(rig.counters.accepted, 5);

    open = false; // the gate is asked before each accept, even the first
    await rig.connect(1);
    await until(() => rig.acceptor.paused, "the gate to pause accepting");
    assert.equal(rig.accepted.length, 5);
    open = true;
    rig.acceptor.resume();
    await until(() => rig.accepted.length === 6, "the last connection");
  } finally {
    await rig.dispose();
  }
});

Deno.test("Acceptor: an onAccept that throws gets its fd closed, and accepting goes on", async () => {
  let seen = 0;
  const rig = await Rig.create((r, fd) => {
    seen++;
    if (seen === 2) throw new Error("cannot serve this one");
    r.accepted.push({ fd, call: r.acceptor.calls });
  });
  try {
    const clients = await rig.connect(4);
    rig.acceptor.open();
    rig.run();
    await until(() => rig.accepted.length === 3, "the 3 other accepts");
    assert.equal(rig.acceptor.calls, 1, "the refusal did not end the burst");
    assert.equal(rig.counters.accepted, 4);
    assert.equal(rig.counters.closed, 1);
    await until(() => clientState(clients[1]) === "eof", "the refused client to see EOF");
    assert.equal(clientState(clients[0]), "open");
    assert.equal(clientState(clients[2]), "open");
    assert.equal(clientState(clients[3]), "open");
    assert.equal(rig.acceptor.paused, false);
    await rig.connect(1);
    await until(() => rig.accepted.length === 4, "a later connection");
  } finally {
    await rig.dispose();
  }
});

Deno.test("Acceptor: close() deregisters the listener but leaves it open and listening for its owner", async () => {
  const rig = await Rig.create();
  try {
    rig.acceptor.open();
    rig.run();
    await rig.connect(1);
    await until(() => rig.accepted.length === 1, "an accept");
    rig.acceptor.pause(20); // paused, with a retry due in 20 ms
    rig.acceptor.close();
    assert.equal(rig.reactor.isRegistered(rig.listener), false);
    assert.ok(fcntl(rig.listener, F_GETFD, 0) >= 0, "the listening fd is still open");
    let later = false;
    rig.reactor.setTimer(60, () => (later = true));
    await until(() => later, "a reactor timer due after the retry");
    assert.equal(rig.reactor.isRegistered(rig.listener), false, "the retry did not bring it back");
    rig.acceptor.resume(); // nor does resume(): a closed acceptor stays closed
    assert.equal(rig.reactor.isRegistered(rig.listener), false);

    await rig.connect(1);
    await turns(rig.reactor, 5);
    assert.equal(rig.accepted.length, 1, "no accepts after close()");
    assert.deepEqual(
      acceptQueue(rig.listener),
      { state: TCP_LISTEN, queued: 1 },
      "still listening",
    );
    const fd = accept4(rig.listener, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
    assert.ok(fd >= 0, "the owner can still accept on it");
    rig.accepted.push({ fd, call: -1 });
    // Out of the backend too: registering it again does not fail with EEXIST.
    rig.reactor.register(rig.listener, { ready() {} }, Interest.NONE);
    rig.reactor.deregister(rig.listener);
  } finally {
    await rig.dispose();
  }
});

Deno.test("Acceptor: an accept errno outside accept(2)'s list is logged and retried: never fatal, no spin, the listener left open", async () => {
  // shutdown(SHUT_RD) on a listener leaves it in a state accept(2) does not
  // describe: accept4 fails with EINVAL and the socket reports a hang-up
  // that no interest masks. The old Acceptor threw (the reactor then closed
  // the listener, and the server closed the same fd number again later).
  const rig = await Rig.create();
  try {
    rig.acceptor.open();
    rig.run();
    assert.equal(shutdown(rig.listener, SHUT_RD), 0);
    await until(() => rig.counters.acceptErrors >= 1, "the EINVAL to be seen");
    const calls = rig.acceptor.calls;
    const errors = rig.counters.acceptErrors;
    let later = false;
    rig.reactor.setTimer(350, () => (later = true));
    await until(() => later, "350 ms of the loop");
    const spun = rig.acceptor.calls - calls;
    const retried = rig.counters.acceptErrors - errors;
    console.log(`in 350 ms: ${spun} ready() calls, ${retried} more accept attempts`);
    assert.ok(retried >= 1, "the acceptor stopped retrying");
    assert.ok(retried <= 6, `retried ${retried} times in 350 ms: not paced at 100 ms`);
    assert.ok(spun <= retried + 1, `${spun} ready() calls in 350 ms: the hang-up spins the loop`);
    assert.equal(rig.reactor.counters.handlerErrors, 0, "accept threw");
    assert.ok(fcntl(rig.listener, F_GETFD, 0) >= 0, "the listening fd was closed by someone");
  } finally {
    await rig.dispose();
  }
});
