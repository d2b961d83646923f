/**
 * The Reactor's loop on real socketpairs and a real kernel: the crash path,
 * stop/run/close, beforeWait hooks, the deferred phase, timers, masking of a
 * batch, interest changes and edge-triggered registration.
 *
 * Nothing here waits on a clock to decide an outcome: "the loop turned N
 * more times" is N reactor timers fired one after the other (each needs its
 * own wait), and every wait for an event is bounded by a generous deadline
 * that fails the test instead of hanging it.
 */
import assert from "node:assert/strict";
import { setUpLogging } from "../log/mod.ts";
import { close, fcntl, recv, send, sleepMicros, timerSlackNs } from "../syscalls/libc.ts";
import { socketPair } from "../syscalls/socket.ts";
import { IORING_FEAT_MIN_TIMEOUT, probeIoUring } from "../syscalls/io_uring.ts";
import { Interest, Ready } from "./interest.ts";
import { batchSleepMicros, type Deferred, Reactor, type ReactorOptions } from "./reactor.ts";
import { BATCH_SIZE } from "./backend.ts";
import { turns, until, within } from "../tests/support/net.ts";

/** fcntl(2)'s F_GETFD (syscalls/constants.ts has no need for it): fails with EBADF on a closed fd. */
const F_GETFD = 1;
const BYTE = new Uint8Array([42]);
const SCRATCH = new Uint8Array(65536);

// The reactor logs through LogTape; route it (JSON lines) into this array so
// tests can count what was logged. Each test file runs in its own isolate.
const logLines: string[] = [];
const decoder = new TextDecoder();
Deno.stderr.writeSync = (p: Uint8Array): number => {
  logLines.push(decoder.decode(p));
  return p.length;
};
setUpLogging("warning", "json");

/** Captured error lines that say `what` threw (the reactor's `{what} threw: {error}`). */
function logged(what: string): string[] {
  return logLines.filter((line) => {
    const record = JSON.parse(line);
    return record.level === "ERROR" && record.properties?.what === what;
  });
}

function isOpen(fd: number): boolean {
  return fcntl(fd, F_GETFD, 0) >= 0;
}

/** Reads everything waiting on a nonblocking fd; returns the byte count. */
function drain(fd: number): number {
  let total = 0;
  for (;;) {
    const n = recv(fd, SCRATCH, SCRATCH.length, 0);
    if (n <= 0) return total;
    total += n;
  }
}

/** Stops the loop, waits for it (bounded) and releases the reactor. */
async function shutDown(reactor: Reactor, running: Promise<void>): Promise<void> {
  reactor.stop();
  await within(running, "run() to resolve after stop()");
  reactor.close();
}

function closeAll(...fds: number[]): void {
  for (const fd of fds) close(fd);
}

/** Runs the loop while `check` runs, then stops it and closes `fds`. */
async function whileRunning(
  reactor: Reactor,
  fds: number[],
  check: () => Promise<void>,
): Promise<void> {
  const running = reactor.run();
  try {
    await check();
  } finally {
    await shutDown(reactor, running);
    closeAll(...fds);
  }
}

Deno.test("Reactor: a handler that throws is deregistered, logged once, and its fd left open for its owner", async () => {
  logLines.length = 0;
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  const boom = new Error("boom");
  let calls = 0;
  const crashes: unknown[] = [];
  let registeredInCrashed: boolean | null = null;
  reactor.register(a, {
    ready() {
      calls++;
      throw boom;
    },
    crashed(error) {
      crashes.push(error);
      registeredInCrashed = reactor.isRegistered(a);
    },
  }, Interest.READABLE);
  send(b, BYTE, 1, 0); // never read by the handler: level-triggered, it stays ready
  await whileRunning(reactor, [a, b], async () => {
    await until(() => crashes.length > 0, "crashed() to be called");
    await turns(reactor, 5);
    assert.equal(calls, 1, "a deregistered fd is not reported again though its byte is unread");
    assert.equal(crashes.length, 1, "crashed() ran once");
    assert.equal(crashes[0], boom, "crashed() got the error ready() threw");
    assert.equal(registeredInCrashed, false, "deregistered before crashed() ran");
    assert.equal(reactor.isRegistered(a), false);
    assert.equal(reactor.counters.handlerErrors, 1);
    assert.ok(isOpen(a), "the reactor did not close the fd (F_GETFD works)");
    assert.equal(recv(a, SCRATCH, 16, 0), 1, "and it is still usable: the byte is there");
    assert.equal(logged(`handler of fd ${a}`).length, 1, logLines.join(""));
  });
});

Deno.test("Reactor: a handler without crashed() is deregistered and its fd left open, and the rest of the batch and later events are still dispatched", async () => {
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  const [c, d] = socketPair();
  let badCalls = 0;
  let badWait = -1;
  const goodWaits: number[] = [];
  reactor.register(a, {
    ready() {
      badCalls++;
      badWait = reactor.counters.waits;
      throw new Error("no crashed() here");
    },
  }, Interest.READABLE);
  reactor.register(c, {
    ready() {
      drain(c);
      goodWaits.push(reactor.counters.waits);
    },
  }, Interest.READABLE);
  // Both ready before the first wait: one batch.
  send(b, BYTE, 1, 0);
  send(d, BYTE, 1, 0);
  await whileRunning(reactor, [a, b, c, d], async () => {
    await until(() => badCalls === 1 && goodWaits.length === 1, "both handlers to run");
    assert.equal(goodWaits[0], badWait, "the other fd of the same batch was dispatched");
    assert.equal(reactor.isRegistered(a), false);
    assert.ok(isOpen(a), "fd left open");
    assert.equal(reactor.isRegistered(c), true);
    send(d, BYTE, 1, 0);
    send(b, BYTE, 1, 0);
    await until(() => goodWaits.length === 2, "a later event on the other fd");
    await turns(reactor, 3);
    assert.equal(badCalls, 1);
    assert.equal(reactor.counters.handlerErrors, 1);
  });
});

Deno.test("Reactor: a crashed() that throws is counted and logged, and the loop goes on", async () => {
  logLines.length = 0;
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  const [c, d] = socketPair();
  let crashedCalls = 0;
  let goodCalls = 0;
  reactor.register(a, {
    ready() {
      throw new Error("first");
    },
    crashed() {
      crashedCalls++;
      throw new Error("second");
    },
  }, Interest.READABLE);
  reactor.register(c, {
    ready() {
      drain(c);
      goodCalls++;
    },
  }, Interest.READABLE);
  send(b, BYTE, 1, 0);
  await whileRunning(reactor, [a, b, c, d], async () => {
    await until(() => crashedCalls === 1, "crashed() to be called");
    send(d, BYTE, 1, 0);
    await until(() => goodCalls === 1, "another fd dispatched after the crash");
    await turns(reactor, 3);
    assert.equal(reactor.running, true);
    assert.equal(crashedCalls, 1);
    assert.equal(reactor.counters.handlerErrors, 2, "ready() and crashed() each counted");
    assert.equal(logged(`handler of fd ${a}`).length, 1, logLines.join(""));
    assert.equal(logged(`crashed() of fd ${a}`).length, 1, logLines.join(""));
    assert.ok(isOpen(a));
  });
});

Deno.test("Reactor: stop() from inside a handler ends run()", async () => {
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  let calls = 0;
  reactor.register(a, {
    ready() {
      calls++;
      drain(a);
      reactor.stop();
    },
  }, Interest.READABLE);
  const running = reactor.run();
  try {
    await turns(reactor, 2);
    send(b, BYTE, 1, 0);
    await within(running, "run() to resolve after a handler called stop()");
    assert.equal(reactor.running, false);
    assert.equal(calls, 1);
    assert.equal(reactor.isRegistered(a), true, "stopping deregisters nothing");
  } finally {
    reactor.stop();
    await within(running, "run()");
    reactor.close();
    closeAll(a, b);
  }
});

Deno.test("Reactor: stop() from a reactor timer ends run()", async () => {
  const reactor = await Reactor.create();
  let fired = false;
  reactor.setTimer(20, () => {
    fired = true;
    reactor.stop();
  });
  const running = reactor.run();
  try {
    await within(running, "run() to resolve after a reactor timer called stop()");
    assert.equal(fired, true);
    assert.equal(reactor.running, false);
  } finally {
    reactor.stop();
    await within(running, "run()");
    reactor.close();
  }
});

Deno.test("Reactor: stop() from a Deno timer ends a parked run()", async () => {
  // Without the watch on Deno's own epoll fds, only stop()'s wake can end the park.
  const reactor = await Reactor.create({ watchDenoLoop: false });
  // run() returns at its first await: idle after one 5 ms wait, it is parked
  // on the pool with no deadline (no timers).
  const running = reactor.run();
  let stoppedAt = 0;
  try {
    await new Promise<void>((resolve) =>
      setTimeout(() => {
        assert.deepEqual(
          [reactor.counters.waits, reactor.counters.parkedWaits, reactor.counters.yields],
          [1, 0, 0],
          "parked since the first wait",
        );
        stoppedAt = performance.now();
        reactor.stop();
        resolve();
      }, 20)
    );
    await within(running, "run() to resolve after a Deno timer called stop()");
    console.log(`run() resolved ${(performance.now() - stoppedAt).toFixed(1)} ms after stop()`);
    assert.equal(reactor.running, false);
    assert.equal(reactor.counters.parkedWaits, 1, "the park ended");
  } finally {
    reactor.stop();
    await within(running, "run()");
    reactor.close();
  }
});

Deno.test("Reactor: idle, the first wait holds the JS thread 5 ms (syncWaitMs) before parking, or as long as asked", async () => {
  // A wait that sleeps arms a kernel timer for its timeout; one due before
  // the kernel's next tick (4 ms at HZ=250) makes the kernel reprogram the
  // CPU's timer at every such wait (reactor.ts says what that cost). run()
  // makes its first wait before it returns, so the time it takes to return
  // is that wait: never shorter than its timeout.
  for (const [opts, ms] of [[{}, 5], [{ syncWaitMs: 1 }, 1]] as const) {
    const reactor = await Reactor.create({ watchDenoLoop: false, ...opts });
    const t0 = performance.now();
    const running = reactor.run();
    const held = performance.now() - t0;
    try {
      console.log(`syncWaitMs ${ms}: run() returned after ${held.toFixed(2)} ms`);
      assert.ok(held >= ms - 0.05, `the first wait held the JS thread ${held} ms, asked ${ms}`);
      assert.deepEqual([reactor.counters.waits, reactor.counters.parkedWaits], [1, 0]);
    } finally {
      reactor.stop();
      await within(running, "run()");
      reactor.close();
    }
  }
});

Deno.test("Reactor: run() twice returns the same promise, before and after it resolved", async () => {
  const reactor = await Reactor.create();
  const first = reactor.run();
  const second = reactor.run();
  try {
    assert.equal(second, first);
    assert.equal(reactor.running, true);
    await turns(reactor, 2);
    reactor.stop();
    await within(first, "run()");
    assert.equal(reactor.run(), first, "a stopped reactor hands back the finished loop");
    assert.equal(reactor.running, false, "and does not start again");
  } finally {
    reactor.stop();
    await within(first, "run()");
    reactor.close();
  }
});

Deno.test("Reactor: close() while running throws, and works once run() resolved", async () => {
  const reactor = await Reactor.create();
  const running = reactor.run();
  let stopped = false;
  try {
    await turns(reactor, 1);
    assert.throws(() => reactor.close(), /Cannot close a running reactor/);
    await turns(reactor, 2);
    assert.equal(reactor.running, true, "the failed close() left the loop running");
    reactor.stop();
    await within(running, "run()");
    stopped = true;
    reactor.close();
  } finally {
    if (!stopped) {
      reactor.stop();
      await within(running, "run()");
      reactor.close();
    }
  }
});

Deno.test("Reactor: beforeWait hooks run once before every wait, parked or not, and a throwing hook is logged and does not stop the loop", async () => {
  logLines.length = 0;
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  const seen: number[] = [];
  let throwerCalls = 0;
  let events = 0;
  reactor.beforeWait(() => {
    throwerCalls++;
    if (throwerCalls === 1) throw new Error("hook");
  });
  reactor.beforeWait(() => seen.push(reactor.counters.waits));
  reactor.register(a, {
    ready() {
      drain(a);
      events++;
    },
  }, Interest.READABLE);
  await whileRunning(reactor, [a, b], async () => {
    await turns(reactor, 10); // busy waits on the JS thread (a timer is always due soon)
    await until(() => reactor.counters.parkedWaits >= 1, "a parked wait to end");
    send(b, BYTE, 1, 0);
    await until(() => events === 1, "an event after the park");
    await turns(reactor, 3);
  });
  const waits = reactor.counters.waits;
  assert.ok(reactor.counters.parkedWaits >= 1);
  assert.equal(seen.length, waits, `one hook run per wait (${seen.length} runs, ${waits} waits)`);
  const before = seen.findIndex((w, i) => w !== i);
  assert.equal(
    before,
    -1,
    `hook run ${before} saw ${seen[before]} waits done: not just before one`,
  );
  assert.equal(throwerCalls, waits, "the hook that threw once was called on every wait after");
  assert.equal(reactor.counters.handlerErrors, 1);
  assert.equal(logged("beforeWait hook").length, 1, logLines.join(""));
});

Deno.test("Reactor: a task deferred inside a handler runs after the handler returned and before the next wait", async () => {
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  const order: string[] = [];
  const waitsAt: Record<string, number> = {};
  reactor.beforeWait(() => {
    if (order.length > 0) order.push("wait");
  });
  reactor.register(a, {
    ready() {
      drain(a);
      order.push("handler start");
      waitsAt.handler = reactor.counters.waits;
      reactor.defer({
        runDeferred() {
          order.push("deferred");
          waitsAt.deferred = reactor.counters.waits;
        },
      });
      order.push("handler end");
    },
  }, Interest.READABLE);
  await whileRunning(reactor, [a, b], async () => {
    await turns(reactor, 2);
    send(b, BYTE, 1, 0);
    await until(() => order.includes("wait"), "the wait after the handler");
    assert.deepEqual(order.slice(0, 4), ["handler start", "handler end", "deferred", "wait"]);
    assert.equal(waitsAt.deferred, waitsAt.handler, "no wait in between");
  });
});

Deno.test("Reactor: a deferred task that defers another runs it in the same phase, after itself", async () => {
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  const order: string[] = [];
  const waitsAt: number[] = [];
  reactor.beforeWait(() => {
    if (order.length > 0) order.push("wait");
  });
  const second: Deferred = {
    runDeferred() {
      order.push("B");
      waitsAt.push(reactor.counters.waits);
    },
  };
  reactor.register(a, {
    ready() {
      drain(a);
      order.push("handler");
      waitsAt.push(reactor.counters.waits);
      reactor.defer({
        runDeferred() {
          order.push("A start");
          reactor.defer(second);
          order.push("A end");
          waitsAt.push(reactor.counters.waits);
        },
      });
    },
  }, Interest.READABLE);
  await whileRunning(reactor, [a, b], async () => {
    await turns(reactor, 2);
    send(b, BYTE, 1, 0);
    await until(() => order.includes("wait"), "the wait after the handler");
    assert.deepEqual(order.slice(0, 5), ["handler", "A start", "A end", "B", "wait"]);
    assert.equal(new Set(waitsAt).size, 1, `one phase, no wait in between: ${waitsAt}`);
  });
});

Deno.test("Reactor: a task deferred from outside the loop runs at once, and what it defers runs before defer() returns", async () => {
  const reactor = await Reactor.create();
  const order: string[] = [];
  const chain = (tag: string): Deferred => ({
    runDeferred() {
      order.push(`${tag} start`);
      reactor.defer({ runDeferred: () => order.push(`${tag} inner`) });
      order.push(`${tag} end`);
    },
  });
  reactor.defer(chain("idle"));
  assert.deepEqual(order, ["idle start", "idle end", "idle inner"], "before run()");
  const running = reactor.run();
  try {
    await until(() => reactor.counters.parkedWaits >= 1, "a parked wait to end");
    // A Deno timer: outside every reactor callback while the loop is parked.
    await new Promise<void>((resolve) =>
      setTimeout(() => {
        reactor.defer(chain("running"));
        order.push("after defer()");
        resolve();
      }, 5)
    );
    assert.deepEqual(order.slice(3), [
      "running start",
      "running end",
      "running inner",
      "after defer()",
    ]);
  } finally {
    await shutDown(reactor, running);
  }
});

Deno.test("Reactor: tasks deferred during dispatch run before the timers due in the same iteration", async () => {
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  const order: string[] = [];
  reactor.register(a, {
    ready() {
      drain(a);
      order.push("handler");
      reactor.defer({ runDeferred: () => order.push("deferred") });
    },
  }, Interest.READABLE);
  // Before the loop runs: the byte is ready and the timer due when the first
  // wait returns, so that one iteration dispatches, runs the deferred task,
  // then the timers. (Armed while the loop ran, a wait could return between
  // the send and the timer and run the timer first: a race, not an order.)
  send(b, BYTE, 1, 0);
  const fired = new Promise<void>((resolve) =>
    reactor.setTimer(0, () => {
      order.push("timer");
      resolve();
    })
  );
  await whileRunning(reactor, [a, b], async () => {
    await within(fired, "the timer");
    assert.deepEqual(order, ["handler", "deferred", "timer"]);
  });
});

Deno.test("Reactor: a timer callback that throws is counted and logged, and the loop goes on", async () => {
  logLines.length = 0;
  const reactor = await Reactor.create();
  const fired: string[] = [];
  reactor.setTimer(5, () => {
    fired.push("thrower");
    throw new Error("timer");
  });
  reactor.setTimer(5, () => fired.push("same deadline"));
  const later = new Promise<void>((resolve) => {
    reactor.setTimer(30, () => {
      fired.push("later");
      resolve();
    });
  });
  const running = reactor.run();
  try {
    await within(later, "the later timer");
    await turns(reactor, 2);
    assert.deepEqual(fired, ["thrower", "same deadline", "later"]);
    assert.equal(reactor.counters.handlerErrors, 1);
    assert.equal(logged("timer callback").length, 1, logLines.join(""));
    assert.equal(reactor.running, true);
  } finally {
    await shutDown(reactor, running);
  }
});

Deno.test("Reactor: a result for an fd deregistered earlier in the same batch is dropped", async () => {
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  const [c, d] = socketPair();
  const calls: string[] = [];
  const waitsAt: number[] = [];
  // Whichever runs first deregisters the other, whose result is already in the batch.
  reactor.register(a, {
    ready() {
      drain(a);
      calls.push("a");
      waitsAt.push(reactor.counters.waits);
      reactor.deregister(c);
    },
  }, Interest.READABLE);
  reactor.register(c, {
    ready() {
      drain(c);
      calls.push("c");
      waitsAt.push(reactor.counters.waits);
      reactor.deregister(a);
    },
  }, Interest.READABLE);
  send(b, BYTE, 1, 0);
  send(d, BYTE, 1, 0); // both ready before the first wait: one batch
  await whileRunning(reactor, [a, b, c, d], async () => {
    await until(() => calls.length >= 1, "a handler to run");
    await turns(reactor, 3);
    assert.equal(calls.length, 1, `only the first handler ran: ${calls}`);
    assert.equal(reactor.counters.dropped, 1, "the other's result was dropped");
    assert.equal(reactor.isRegistered(calls[0] === "a" ? c : a), false);
    assert.equal(waitsAt[0], 1, "in the first batch");
  });
});

Deno.test("Reactor: a result for an fd whose interest an earlier handler of the batch dropped to NONE is dropped", async () => {
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  const [c, d] = socketPair();
  const calls: string[] = [];
  reactor.register(a, {
    ready() {
      drain(a);
      calls.push("a");
      reactor.reregister(c, Interest.NONE);
    },
  }, Interest.READABLE);
  reactor.register(c, {
    ready() {
      drain(c);
      calls.push("c");
      reactor.reregister(a, Interest.NONE);
    },
  }, Interest.READABLE);
  send(b, BYTE, 1, 0);
  send(d, BYTE, 1, 0); // one batch
  await whileRunning(reactor, [a, b, c, d], async () => {
    await until(() => calls.length >= 1, "a handler to run");
    await turns(reactor, 3);
    assert.equal(calls.length, 1, `only the first handler ran: ${calls}`);
    assert.equal(reactor.counters.dropped, 1, "the other's result was masked out");
    assert.equal(reactor.isRegistered(a) && reactor.isRegistered(c), true, "both still registered");
  });
});

Deno.test("Reactor: a result for an fd deregistered and registered again in the same batch (a reused number) reaches neither handler", async () => {
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  const [c, d] = socketPair();
  const calls: string[] = [];
  const oldC = {
    ready() {
      drain(c);
      calls.push("old c");
    },
  };
  const newC = {
    ready() {
      drain(c);
      calls.push("new c");
    },
  };
  reactor.register(a, {
    ready() {
      drain(a);
      calls.push("a");
      if (reactor.isRegistered(c) && calls.length === 1) {
        // As if c were closed and its number handed out again by accept.
        reactor.deregister(c);
        reactor.register(c, newC, Interest.READABLE);
      }
    },
  }, Interest.READABLE);
  reactor.register(c, oldC, Interest.READABLE);
  send(b, BYTE, 1, 0); // a first in epoll's ready list
  send(d, BYTE, 1, 0);
  await whileRunning(reactor, [a, b, c, d], async () => {
    await until(() => calls.length >= 1, "a handler to run");
    await turns(reactor, 3);
    // Still readable, the new registration hears of c's byte in the next wait.
    assert.deepEqual(calls, ["a", "new c"]);
    assert.equal(reactor.counters.dropped, 1, "the old result was dropped by its token");
  });
});

Deno.test("Reactor: reregister to WRITABLE reports only writability, NONE silences the fd, READABLE brings it back", async () => {
  const reactor = await Reactor.create();
  const [a, b] = socketPair();
  const reports: number[] = [];
  reactor.register(a, {
    ready(ready) {
      reports.push(ready);
      // Level-triggered and always writable/readable: silence it at once.
      reactor.reregister(a, Interest.NONE);
    },
  }, Interest.NONE);
  send(b, BYTE, 1, 0); // readable from now on, and never read
  await whileRunning(reactor, [a, b], async () => {
    await turns(reactor, 3);
    assert.deepEqual(reports, [], "NONE: no report though readable and writable");
    reactor.reregister(a, Interest.WRITABLE);
    await until(() => reports.length === 1, "a writable report");
    assert.equal(reports[0] & Ready.WRITABLE, Ready.WRITABLE);
    assert.equal(reports[0] & Ready.READABLE, 0, "readable, but not asked for");
    await turns(reactor, 5);
    assert.equal(reports.length, 1, "back to NONE: silent, though still writable");
    assert.equal(reactor.isRegistered(a), true, "NONE keeps the registration");
    reactor.reregister(a, Interest.READABLE);
    await until(() => reports.length === 2, "a readable report");
    assert.equal(reports[1] & Ready.READABLE, Ready.READABLE);
    assert.equal(reports[1] & Ready.WRITABLE, 0, "writable, but not asked for");
  });
});

for (const edge of [true, false]) {
  const name = edge
    ? "Reactor (edge: true): an fd is reported once per arrival of new data, not again while bytes stay unread"
    : "Reactor (level-triggered): an fd is reported on every wait while bytes stay unread";
  Deno.test(name, async () => {
    const reactor = await Reactor.create({ edge });
    assert.equal(reactor.edge, edge);
    const [a, b] = socketPair();
    let calls = 0;
    reactor.register(a, {
      ready() {
        calls++;
        recv(a, SCRATCH, 1, 0); // one byte per call, never to EAGAIN
      },
    }, Interest.READABLE);
    const running = reactor.run();
    try {
      send(b, SCRATCH, 2048, 0);
      await until(() => calls >= 1, "the first report");
      await turns(reactor, 10);
      if (edge) {
        assert.equal(calls, 1, "no new edge, no report, though 2047 bytes wait");
        send(b, SCRATCH, 10, 0);
        await until(() => calls === 2, "a report for the new bytes");
        await turns(reactor, 10);
        assert.equal(calls, 2);
      } else {
        assert.ok(calls >= 10, `reported on every wait: ${calls} calls`);
      }
    } finally {
      reactor.deregister(a);
      await shutDown(reactor, running);
      closeAll(a, b);
    }
  });
}

Deno.test("Reactor: batchWaitUs is checked, and says who batches (the kernel on io_uring, else the loop)", async () => {
  for (const bad of [-1, 1.5, 10_001, NaN]) {
    await assert.rejects(Reactor.create({ batchWaitUs: bad }), RangeError, `batchWaitUs ${bad}`);
    assert.throws(() => Reactor.createSync({ batchWaitUs: bad }), RangeError);
  }
  const off = await Reactor.create();
  const on = await Reactor.create({ batchWaitUs: 300 });
  try {
    assert.equal(off.batchWaitUs, 0);
    assert.equal(on.batchWaitUs, 300);
    assert.equal(on.backend.batchWaitUs, undefined, "epoll cannot wait for a count: the loop does");
  } finally {
    off.close();
    on.close();
  }
  const probe = probeIoUring();
  if (!probe.ok || (probe.features & IORING_FEAT_MIN_TIMEOUT) === 0) {
    console.warn(
      `io_uring part skipped: ${probe.ok ? "no IORING_FEAT_MIN_TIMEOUT" : probe.reason}`,
    );
    return;
  }
  const ring = await Reactor.create({ backend: "io_uring", batchWaitUs: 300 });
  try {
    assert.equal(ring.batchWaitUs, 300);
    assert.equal(ring.backend.batchWaitUs, 300, "the kernel waits (min_wait_usec)");
  } finally {
    ring.close();
  }
});

Deno.test("Reactor: while a reactor batches, the thread's timer slack is 1 µs (a short sleep is not stretched by 50 µs); the last close restores it", async () => {
  const before = timerSlackNs();
  assert.ok(before > 1000, `the default slack is larger: ${before} ns`);
  const plain = await Reactor.create();
  assert.equal(timerSlackNs(), before, "no batched waits: untouched");
  const a = await Reactor.create({ batchWaitUs: 100 });
  const b = await Reactor.create({ batchWaitUs: 20, backend: "poll" });
  try {
    assert.equal(timerSlackNs(), 1000);
    a.close();
    assert.equal(timerSlackNs(), 1000, "b still batches");
  } finally {
    b.close();
    plain.close();
  }
  assert.equal(timerSlackNs(), before, "restored by the last one");
  // What it is for: a 100 µs sleep is not stretched by the default 50 µs.
  const medianLate = (): number => {
    const late: number[] = [];
    for (let i = 0; i < 51; i++) {
      const t0 = performance.now();
      sleepMicros(100);
      late.push((performance.now() - t0) * 1000 - 100);
    }
    return late.sort((x, y) => x - y)[25];
  };
  const h = await Reactor.create({ batchWaitUs: 100 });
  let tight: number;
  try {
    tight = medianLate();
  } finally {
    h.close();
  }
  const loose = medianLate();
  console.log(
    `sleepMicros(100): median ${tight.toFixed(0)} µs late with 1 µs slack, ${
      loose.toFixed(0)
    } µs with ${before / 1000} µs`,
  );
  assert.ok(tight < loose - 20, `tight ${tight.toFixed(0)} µs, loose ${loose.toFixed(0)} µs`);
});

Deno.test("batchSleepMicros: only after a small turn among enough fds, never before a look, never past the wait", () => {
  const many = 100; // fds registered
  assert.equal(batchSleepMicros(1, many, 0, 2), 0, "off");
  assert.equal(batchSleepMicros(0, many, 300, 2), 0, "after an idle wait: the wait sleeps anyway");
  assert.equal(batchSleepMicros(1, many, 300, 2), 300);
  assert.equal(batchSleepMicros(BATCH_SIZE - 1, many, 300, 2), 300);
  assert.equal(batchSleepMicros(BATCH_SIZE, many, 300, 2), 0, "a full turn");
  assert.equal(batchSleepMicros(5, many, 300, 0), 0, "a look (handler promises in flight)");
  assert.equal(batchSleepMicros(5, many, 5000, 2), 2000, "not past the wait (a timer is due)");
  assert.equal(batchSleepMicros(5, many, 300, -1), 300);
  // A wait reports each fd once: with few fds a batch cannot fill.
  assert.equal(batchSleepMicros(1, 2, 300, 2), 0, "a lone client and its listener: never");
  assert.equal(batchSleepMicros(4, 10, 300, 2), 300, "4 of 10: others may come");
  assert.equal(batchSleepMicros(5, 10, 300, 2), 0, "half of them reported: no sleep");
});

// On every backend the loop's sleep is the same code; io_uring takes it
// where the kernel cannot wait for a count (before 6.12): kernelBatching
// false puts it on that path on any kernel.
const SLEEPING_LOOPS: { name: string; opts: ReactorOptions }[] = [
  { name: "epoll", opts: {} },
  { name: "poll", opts: { backend: "poll" } },
  { name: "select", opts: { backend: "select" } },
  {
    name: "io_uring without the kernel's batching",
    opts: { backend: "io_uring", ioUring: { kernelBatching: false } },
  },
];

for (const { name, opts } of SLEEPING_LOOPS) {
  Deno.test(`Reactor: batched waits on ${name} sleep after a small turn, not after a full one or when idle`, async () => {
    if (opts.backend === "io_uring") {
      const probe = probeIoUring();
      if (!probe.ok) {
        console.warn(`skipped: ${probe.reason}`);
        return;
      }
    }
    // Deno's own epoll fds are not watched: their events would be turns too.
    const reactor = await Reactor.create({ ...opts, batchWaitUs: 300, watchDenoLoop: false });
    assert.equal(reactor.batchWaitUs, 300);
    assert.equal(reactor.backend.batchWaitUs, undefined, "the loop batches, not the kernel");
    const pairs = Array.from({ length: 20 }, () => socketPair());
    let reads = 0;
    for (const [a] of pairs) {
      reactor.register(a, {
        ready() {
          reads++;
          recv(a, SCRATCH, SCRATCH.length, 0);
        },
      }, Interest.READABLE);
    }
    // Everything happens in timer callbacks, inside the loop: a call from
    // outside (the test's own code) would wake a parked wait, one event more.
    const sleeps = () => reactor.counters.batchSleeps;
    const seen: number[] = [];
    const done = new Promise<void>((resolve) => {
      const idle = (left: number) => () => {
        if (left > 0) reactor.setTimer(1, idle(left - 1));
        else {
          seen.push(sleeps(), reads);
          resolve();
        }
      };
      const full = () => {
        seen.push(sleeps(), reads);
        for (const [, b] of pairs) send(b, BYTE, 1, 0); // all there for the next wait
        reactor.setTimer(5, () => {
          seen.push(sleeps(), reads);
          reactor.setTimer(1, idle(10));
        });
      };
      reactor.setTimer(1, () => {
        seen.push(sleeps());
        send(pairs[0][1], BYTE, 1, 0);
        reactor.setTimer(5, full);
      });
    });
    await whileRunning(reactor, pairs.flat(), async () => {
      await within(done, "the timer chain");
      const [s0, s1, r1, s2, r2, s3, r3] = seen;
      assert.equal(r1, 1);
      assert.equal(s1 - s0, 1, "a turn of 1 event: the next wait slept first");
      assert.equal(r2, 21);
      assert.equal(s2 - s1, 0, "a turn of 20 events (>= BATCH_SIZE): no sleep");
      assert.equal(r3, 21);
      assert.equal(s3 - s2, 0, "ten idle turns: no sleep");
    });
  });
}
