/**
 * Echo benchmark: our echo app beside the plain C epoll server
 * (`../shared/bench/c_epoll_server.c echo`, when it and `cc` are there).
 *
 * - rr: N connections each send a 64-byte message and wait for it back, for
 *   D seconds: round trips/s and server CPU µs per round trip.
 * - stream: one connection pushes 64 MiB while reading it back: MB/s and
 *   server CPU seconds for the whole transfer.
 *
 * The load generator is itself a Reactor (raw sockets through FFI), in this
 * process; servers run in their own sessions.
 *
 *   deno run -A bench/echo.ts [--duration 5] [--connections 50] [--megabytes 64]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { numberFlag, orExit } from "./lib/flags.ts";
import { CLIENT_LIMITS } from "./lib/client.ts";
import { Reactor } from "../reactor/reactor.ts";
import { Connection, type Protocol } from "../handlers/connection.ts";
import { ConnectionContext } from "../handlers/context.ts";
import { connectTcp } from "../syscalls/socket.ts";
import { probeIoUring } from "../syscalls/io_uring.ts";
import { ticksToSeconds } from "./lib/proc.ts";
import { startServer, stopServer } from "./lib/server.ts";
import { buildC, machineInfo } from "./lib/machine.ts";
import { formatTable, num } from "./lib/table.ts";

const { values } = orExit("bench:echo", () =>
  parseArgs({
    options: {
      duration: { type: "string", default: "5" },
      connections: { type: "string", default: "50" },
      megabytes: { type: "string", default: "64" },
    },
    strict: true,
  }));
const seconds = numberFlag("bench:echo", "duration", values.duration!, { min: 1 });
const conns = numberFlag("bench:echo", "connections", values.connections!, {
  min: 1,
  integer: true,
});
const total = numberFlag("bench:echo", "megabytes", values.megabytes!, { min: 1, integer: true }) <<
  20;

async function roundTrips(port: number): Promise<number> {
  const reactor = await Reactor.create();
  const context = new ConnectionContext(reactor, { limits: CLIENT_LIMITS, timeouts: null });
  const msg = new Uint8Array(64).fill(0x61);
  let trips = 0;
  let running = true;
  const protocol: Protocol & { pending: Map<Connection, number> } = {
    pending: new Map(),
    data(conn, _buf, start, end) {
      let got = (this.pending.get(conn) ?? 0) + end - start;
      while (got >= 64) {
        got -= 64;
        trips++;
        if (running) conn.write(msg);
      }
      this.pending.set(conn, got);
    },
  };
  const clients = Array.from({ length: conns }, () => {
    const c = new Connection(context, connectTcp("127.0.0.1", port).fd, protocol);
    c.open();
    c.write(msg);
    return c;
  });
  reactor.setTimer(seconds * 1000, () => {
    running = false;
    reactor.stop();
  });
  await reactor.run();
  for (const c of clients) c.close();
  reactor.close();
  return trips;
}

async function stream(port: number): Promise<number> {
  const reactor = await Reactor.create();
  const context = new ConnectionContext(reactor, { limits: CLIENT_LIMITS, timeouts: null });
  const chunk = new Uint8Array(1 << 20).map((_, i) => i & 0xff);
  let got = 0;
  const t0 = performance.now();
  let ms = 0;
  const conn = new Connection(context, connectTcp("127.0.0.1", port).fd, {
    data(_c, _b, start, end) {
      got += end - start;
      if (got >= total) {
        ms = performance.now() - t0;
        reactor.stop();
      }
    },
  });
  conn.open();
  for (let sent = 0; sent < total; sent += chunk.length) conn.write(chunk);
  await reactor.run();
  conn.close();
  reactor.close();
  return ms;
}

const cServer = new URL("../../shared/bench/c_epoll_server.c", import.meta.url).pathname;
const servers: { name: string; cmd: string }[] = [
  { name: "ours", cmd: `${Deno.execPath()} run -A main.ts serve --app echo --port $PORT` },
];
if (probeIoUring().ok) {
  servers.push({
    name: "ours-io_uring",
    cmd: `${Deno.execPath()} run -A main.ts serve --app echo --backend io_uring --port $PORT`,
  });
}
const cBin = `${await Deno.makeTempDir()}/c_epoll_server`;
const cSkip = await buildC(cServer, cBin);
if (cSkip === null) servers.push({ name: "c", cmd: `${cBin} echo $PORT` });
else console.log(`(the C anchor is skipped: ${cSkip})`);

const rows: string[][] = [];
const results: Record<string, unknown>[] = [];
for (const s of servers) {
  const h = await startServer({
    name: s.name,
    cmd: s.cmd,
    cwd: new URL("..", import.meta.url).pathname,
  });
  try {
    await roundTrips(h.port).then(() => {}); // warm-up (JIT) with the same duration
    let t = h.sample().cpuTicks;
    const trips = await roundTrips(h.port);
    const rrCpu = ticksToSeconds(h.sample().cpuTicks - t);
    t = h.sample().cpuTicks;
    const ms = await stream(h.port);
    const streamCpu = ticksToSeconds(h.sample().cpuTicks - t);
    const r = {
      server: s.name,
      roundTripsPerSecond: trips / seconds,
      cpuMicrosPerRoundTrip: (rrCpu * 1e6) / trips,
      streamMegabytesPerSecond: total / (1 << 20) / (ms / 1000),
      streamCpuSeconds: streamCpu,
      rssMiB: h.sample().rssBytes / (1 << 20),
    };
    results.push(r);
    rows.push([
      s.name,
      num(r.roundTripsPerSecond),
      num(r.cpuMicrosPerRoundTrip, 2),
      num(r.streamMegabytesPerSecond),
      num(r.streamCpuSeconds, 2),
      num(r.rssMiB, 1),
    ]);
  } finally {
    await stopServer(h);
  }
}
console.log(formatTable(
  [
    "server",
    "round trips/s",
    "cpu µs/trip",
    `MB/s (${total >> 20} MiB)`,
    "stream cpu s",
    "RSS MiB",
  ],
  rows,
));
const ours = results.find((r) => r.server === "ours");
const c = results.find((r) => r.server === "c");
if (ours && c) {
  console.log(
    `ours vs c: CPU per round trip ${
      num((ours.cpuMicrosPerRoundTrip as number) / (c.cpuMicrosPerRoundTrip as number), 2)
    }x, stream CPU ${num((ours.streamCpuSeconds as number) / (c.streamCpuSeconds as number), 2)}x`,
  );
}
const out = new URL("results/", import.meta.url).pathname;
await Deno.mkdir(out, { recursive: true });
await Deno.writeTextFile(
  `${out}echo-latest.json`,
  JSON.stringify({ machine: machineInfo(), seconds, conns, total, results }, null, 2),
);
