/**
 * What only the io_uring backend does (the shared behaviour is in
 * backends_test.ts): the probe, `--backend auto` falling back where io_uring
 * is blocked (forced with REACTOR_IO_URING=off), an explicit `--backend
 * io_uring` that cannot work, CQ overflow, fd leaks over many connections,
 * a peer reset with our output in flight, and HTTP unchanged on it.
 */
import assert from "node:assert/strict";
import { IoUringBackend } from "../reactor/io_uring.ts";
import { Reactor } from "../reactor/reactor.ts";
import { EPOLLIN } from "../syscalls/constants.ts";
import {
  IO_URING_ENV,
  IORING_FEAT_MIN_TIMEOUT,
  IORING_OP_POLL_ADD,
  IORING_OP_POLL_REMOVE,
  IORING_OP_RECV,
  IORING_OP_SEND,
  probeIoUring,
} from "../syscalls/io_uring.ts";
import { close, send } from "../syscalls/libc.ts";
import { socketPair } from "../syscalls/socket.ts";
import { Server } from "../server/server.ts";
import { withServer } from "./support/server.ts";
import { rudePeer } from "./support/rude_peer.ts";
import type { Connection, Protocol } from "../handlers/connection.ts";
import {
  assertFdsBackTo,
  Cli,
  dial,
  echoClients,
  medianRoundTrip,
  openFdCount,
  pattern,
  readExactly,
  readToEnd,
  sleep,
  startCli,
  waitFor,
  writeAll,
} from "./support/net.ts";

const PROBE = probeIoUring();
const ignore = !PROBE.ok;
if (ignore) console.warn(`io_uring tests skipped: ${PROBE.reason}`);

/**
 * Runs `code` (a module body; `R` is the repo root URL) in a child Deno with
 * REACTOR_IO_URING=off and returns what it printed. A child, not
 * `Deno.env.set` here: test files share this process's environment, and
 * another file's io_uring test would see io_uring switched off.
 */
async function withIoUringOff(code: string): Promise<string> {
  const root = new URL("../", import.meta.url).href;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", `const R = ${JSON.stringify(root)};\n${code}`],
    env: { [IO_URING_ENV]: "off" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test({
  name: "io_uring probe: the opcodes the backend needs, and a reason when forced off",
  ignore,
  async fn() {
    assert.equal(PROBE.reason, "");
    for (const op of [IORING_OP_POLL_ADD, IORING_OP_POLL_REMOVE, IORING_OP_SEND, IORING_OP_RECV]) {
      assert.ok(PROBE.ops.has(op), `opcode ${op} missing from ${[...PROBE.ops]}`);
    }
    console.log(
      `features 0x${
        PROBE.features.toString(16)
      }, ${PROBE.ops.size} opcodes, defer taskrun ${PROBE.deferTaskrun}`,
    );
    const off = await withIoUringOff(`
      const { probeIoUring } = await import(R + "syscalls/io_uring.ts");
      const { IoUringBackend, IoUringUnavailableError } = await import(R + "reactor/io_uring.ts");
      const p = probeIoUring();
      let refused = "no";
      try { new IoUringBackend(16); } catch (e) { refused = e instanceof IoUringUnavailableError ? "yes" : String(e); }
      console.log(JSON.stringify({ ok: p.ok, reason: p.reason, refused }));`);
    assert.deepEqual(JSON.parse(off), {
      ok: false,
      reason: "disabled by REACTOR_IO_URING=off",
      refused: "yes",
    });
  },
});

Deno.test({
  name: "io_uring: auto picks io_uring here, and epoll when io_uring is off",
  ignore,
  async fn() {
    const uring = await Reactor.create({ backend: "auto" });
    assert.equal(uring.backend.name, "io_uring");
    uring.close();
    const off = await withIoUringOff(`
      const { Reactor } = await import(R + "reactor/reactor.ts");
      const { IoUringUnavailableError } = await import(R + "reactor/io_uring.ts");
      const auto = await Reactor.create({ backend: "auto" });
      const name = auto.backend.name;
      auto.close();
      let refused = "no";
      try { await Reactor.create({ backend: "io_uring" }); } catch (e) { refused = e instanceof IoUringUnavailableError ? "yes" : String(e); }
      console.log(JSON.stringify({ name, refused }));`);
    assert.deepEqual(JSON.parse(off), { name: "epoll", refused: "yes" });
  },
});

Deno.test("cli: --backend auto where io_uring is blocked serves on epoll and says why", async () => {
  const cli = new Cli(["serve", "--port", "0", "--app", "echo", "--backend", "auto"], "main.ts", {
    [IO_URING_ENV]: "off",
  });
  try {
    const m = await cli.waitOutput(/listening on [^\s]*:(\d+) \((\w+),/);
    assert.equal(m[2], "epoll");
    assert.match(
      cli.stderr,
      /backend auto: epoll, io_uring unavailable: disabled by REACTOR_IO_URING=off/,
    );
    const conn = await dial(Number(m[1]));
    await writeAll(conn, pattern(3, 1000));
    assert.deepEqual(await readExactly(conn, 1000), pattern(3, 1000));
    conn.close();
  } finally {
    await cli.stop();
  }
});

Deno.test("cli: --backend io_uring where it cannot work is one line and exit 2", async () => {
  const cli = new Cli(["serve", "--port", "0", "--backend", "io_uring"], "main.ts", {
    [IO_URING_ENV]: "off",
  });
  const code = await cli.exit();
  assert.equal(code, 2);
  assert.equal(
    cli.stderr.trim(),
    "reactor: --backend io_uring: disabled by REACTOR_IO_URING=off",
  );
});

Deno.test({
  name: "cli: --backend io_uring serves and says so; auto picks it",
  ignore,
  async fn() {
    for (const backend of ["io_uring", "auto"]) {
      const { cli, port } = await startCli(["--backend", backend, "--app", "http"]);
      try {
        assert.match(cli.stderr, /\(io_uring, level-triggered/);
        const conn = await dial(port);
        await writeAll(conn, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
        const head = new TextDecoder().decode(await readExactly(conn, 17));
        assert.equal(head, "HTTP/1.1 200 OK\r\n");
        conn.close();
      } finally {
        await cli.stop();
      }
    }
  },
});

Deno.test({
  name:
    "cli: --batch-wait on io_uring: 100 clients exact; a batch that never fills ends after its wait; a lone client does not wait",
  ignore: ignore || (PROBE.features & IORING_FEAT_MIN_TIMEOUT) === 0,
  async fn() {
    const base = await startCli(["--backend", "io_uring", "--app", "echo"]);
    let baseline: number;
    try {
      baseline = await medianRoundTrip(base.port, 200);
    } finally {
      await base.cli.stop();
    }
    const { cli, port } = await startCli([
      "--backend",
      "io_uring",
      "--batch-wait",
      "200",
      "--app",
      "echo",
    ]);
    try {
      assert.match(cli.stderr, /\(io_uring, batched waits 200 µs, level-triggered/);
      await echoClients(port, 100, (i) => 1 + (i * 7919) % 70_000);
      // One client (with the listener, under half of 16 fds): min_complete 1.
      const alone = await medianRoundTrip(port, 200);
      // One client among 40 idle ones: the kernel waits for 16 completions
      // that never come, so each turn must end after the 200 µs wait, not
      // at the end of the 5 ms JS-thread wait.
      const idle = await Promise.all(Array.from({ length: 40 }, () => dial(port)));
      let among: number;
      try {
        among = await medianRoundTrip(port, 200);
      } finally {
        for (const c of idle) c.close();
      }
      console.log(
        `median echo round trip: ${baseline.toFixed(3)} ms; with --batch-wait 200 alone ${
          alone.toFixed(3)
        } ms, beside 40 idle connections ${among.toFixed(3)} ms`,
      );
      assert.ok(
        among < baseline + 1.2,
        `round trips took ${among.toFixed(3)} ms (without: ${baseline.toFixed(3)} ms)`,
      );
      assert.ok(
        alone < among,
        `alone (${alone.toFixed(3)} ms) the kernel does not wait 200 µs as beside idle ones (${
          among.toFixed(3)
        } ms)`,
      );
    } finally {
      await cli.stop();
    }
  },
});

Deno.test({
  name:
    "io_uring: more completions than CQ entries are all delivered (overflow kept by the kernel)",
  ignore,
  fn() {
    // A CQ of 8 entries and 64 fds ready at once: 56 completions overflow.
    const be = new IoUringBackend(1024, { sqEntries: 4, cqEntries: 8 });
    const pairs = Array.from({ length: 64 }, () => socketPair());
    try {
      pairs.forEach(([a, b], i) => {
        be.add(a, EPOLLIN, 1000 + i);
        send(b, new Uint8Array(1), 1, 0);
      });
      const seen = new Map<number, number>();
      let waits = 0;
      while (seen.size < pairs.length && waits < 100) {
        const n = be.wait(0);
        waits++;
        for (let i = 0; i < n; i++) {
          const fd = be.resultFd(i);
          const k = pairs.findIndex(([a]) => a === fd);
          assert.ok(k >= 0, `result for unknown fd ${fd}`);
          assert.equal(be.resultToken(i), 1000 + k);
          seen.set(fd, (seen.get(fd) ?? 0) + 1);
        }
      }
      console.log(`64 fds ready, CQ of ${be.ring.cqEntries}: all seen in ${waits} waits`);
      assert.equal(seen.size, pairs.length, `only ${seen.size} of 64 reported in ${waits} waits`);
      assert.equal(be.ring.cqOverflow, 0, "completions were dropped");
    } finally {
      be.close();
      for (const [a, b] of pairs) {
        close(a);
        close(b);
      }
    }
  },
});

Deno.test({
  name: "io_uring: 2,000 connect/close cycles (multishot accept) leak no fd",
  ignore,
  async fn() {
    await withServer({ backend: "io_uring" }, async (server) => {
      const warm = await dial(server.port);
      warm.close();
      assert.ok(await waitFor(() => server.connectionCount === 0));
      const before = openFdCount();
      const msg = pattern(7, 64);
      for (let i = 0; i < 2000; i += 50) {
        await Promise.all(Array.from({ length: 50 }, async () => {
          const conn = await dial(server.port);
          await writeAll(conn, msg);
          await readExactly(conn, msg.length);
          conn.close();
        }));
      }
      assert.ok(
        await waitFor(() => server.connectionCount === 0),
        `${server.connectionCount} left open`,
      );
      assert.equal(server.context.counters.accepted, 2001);
      const streams = server.context.streams;
      if (streams !== null) {
        assert.equal(
          streams.counters.accepts,
          2001,
          "not every connection came by multishot accept",
        );
      }
      await assertFdsBackTo(before, 2, 10_000);
    });
  },
});

Deno.test({
  name: "io_uring: a peer that resets while our output waits does not disturb the others",
  ignore,
  async fn() {
    const limits = { highWaterMark: 64 << 10, lowWaterMark: 16 << 10, maxOutputBytes: 16 << 20 };
    await withServer({ backend: "io_uring", limits }, async (server) => {
      const rude = Array.from(
        { length: 10 },
        (_, i) => rudePeer(server.port, 200 + i, 8 << 20, 100),
      );
      const good = Array.from({ length: 10 }, async (_, i) => {
        const conn = await dial(server.port);
        const data = pattern(100 + i, 1 << 20);
        const [, back] = await Promise.all([writeAll(conn, data), readExactly(conn, data.length)]);
        conn.close();
        assert.deepEqual(back, data);
      });
      await Promise.all([...rude, ...good]);
      assert.ok(await waitFor(() => server.connectionCount === 0), "connections left open");
      const c = server.context.counters;
      console.log(
        `bytes in ${c.bytesIn}, out ${c.bytesOut}, writable arms ${c.writableArms};`,
        server.context.streams?.counters,
      );
      assert.ok(c.bytesOut > 10 << 20, "the good clients' bytes did not all go out");
      assert.equal(server.reactor.counters.handlerErrors, 0);
    });
  },
});

Deno.test({
  name: "io_uring streams: connections receive and send by completion (no recv/send calls)",
  ignore,
  async fn() {
    await withServer({ backend: "io_uring" }, async (server) => {
      const streams = server.context.streams;
      assert.ok(streams !== null, "no streams on the io_uring backend");
      await echoClients(server.port, 20, (i) => 100_000 + i * 13);
      assert.ok(await waitFor(() => server.connectionCount === 0), "connections left open");
      console.log(streams.counters);
      assert.ok(streams.counters.recvs >= 20, "receives did not go through the buffer ring");
      assert.ok(streams.counters.sends >= 20, "sends did not go through the ring");
    });
  },
});

Deno.test({
  name: "io_uring streams: a buffer ring of 4 runs dry (ENOBUFS) and every byte still arrives",
  ignore,
  async fn() {
    const ioUring = { streams: { count: 4, size: 1024, sendSize: 4096 } };
    await withServer({ backend: "io_uring", ioUring }, async (server) => {
      await echoClients(server.port, 30, (i) => 200_000 + i * 101);
      assert.ok(await waitFor(() => server.connectionCount === 0), "connections left open");
      const c = server.context.streams!.counters;
      console.log(c);
      assert.ok(c.bufferStarvations > 0, "the ring never ran dry: the test proves nothing");
      assert.equal(server.context.counters.closed, 30);
    });
  },
});

Deno.test({
  name:
    "io_uring streams: half-close: every echoed byte, then EOF; the bytes taken are delivered before the FIN",
  ignore,
  async fn() {
    await withServer({ backend: "io_uring" }, async (server) => {
      const conn = await dial(server.port);
      const data = pattern(11, 3 << 20);
      await writeAll(conn, data);
      await conn.closeWrite();
      assert.deepEqual(await readToEnd(conn), data);
      conn.close();
      assert.ok(await waitFor(() => server.connectionCount === 0));
    });
  },
});

Deno.test({
  name: "io_uring streams: a write made from a timer while the loop is parked goes out at once",
  ignore,
  async fn() {
    const late = (): Protocol => ({
      data(conn: Connection, data: Uint8Array, start: number, end: number) {
        const copy = data.slice(start, end);
        setTimeout(() => conn.write(copy), 50); // Deno's timer: the reactor is parked then
      },
    });
    await withServer({ backend: "io_uring", protocol: late }, async (server) => {
      const conn = await dial(server.port);
      await sleep(30);
      const parkedBefore = server.reactor.counters.parkedWaits;
      const t0 = performance.now();
      await writeAll(conn, pattern(12, 100));
      assert.deepEqual(await readExactly(conn, 100), pattern(12, 100));
      const ms = performance.now() - t0;
      console.log(`answered after ${ms.toFixed(1)} ms (50 ms timer)`);
      assert.ok(ms < 1000, `the write waited ${ms.toFixed(0)} ms for the loop to wake`);
      assert.ok(server.reactor.counters.parkedWaits > parkedBefore, "the loop never parked");
      conn.close();
    });
  },
});

Deno.test({
  name:
    "io_uring streams: bytes a closed connection took still reach the peer when the server stops",
  ignore,
  async fn() {
    const big = pattern(13, 4 << 20);
    let stopping: Promise<void> | null = null;
    let server: Server | null = null;
    const answer = (): Protocol => ({
      data() {},
      end(conn: Connection) {
        conn.write(big);
        conn.closeAfterFlush();
      },
      // The connection is closed as far as it knows, with bytes still in the
      // ring's hands: stop the server right now.
      closed() {
        stopping = server!.stop();
      },
    });
    server = await Server.start({ backend: "io_uring", port: 0, protocol: answer });
    try {
      const conn = await dial(server.port);
      await writeAll(conn, new Uint8Array([1]));
      await conn.closeWrite();
      const back = await readToEnd(conn);
      assert.ok(stopping !== null, "the connection never closed");
      await stopping;
      assert.equal(back.length, big.length);
      assert.deepEqual(back, big);
      conn.close();
    } finally {
      await server.stop();
    }
  },
});
