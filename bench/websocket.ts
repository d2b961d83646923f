/**
 * WebSocket echo benchmark: bench/apps/ws_echo.ts under `deno serve` and
 * under `reactor serve --module`, the same file.
 *
 * - echo: C connections (default 50) each keep F messages (default 16) of
 *   64 bytes (masked text frames) in flight for D seconds: messages/s and
 *   server CPU µs per echoed message (the target: at most half of deno
 *   serve's).
 * - idle: K sockets (default 2000) opened and left idle: server RSS per
 *   socket.
 *
 * The load generator is itself a Reactor (raw sockets through FFI), in this
 * process; each server runs in its own session and is measured from /proc.
 *
 *   deno run -A bench/websocket.ts [--duration 5] [--connections 50] [--inflight 16] [--idle 2000]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { numberFlag, orExit } from "./lib/flags.ts";
import { CLIENT_LIMITS } from "./lib/client.ts";
import { UpgradeReader, WS_UPGRADE_REQUEST } from "./lib/ws_client.ts";
import { Reactor } from "../reactor/reactor.ts";
import { Connection, type Protocol } from "../handlers/connection.ts";
import { ConnectionContext } from "../handlers/context.ts";
import { connectTcp } from "../syscalls/socket.ts";
import { ticksToSeconds } from "./lib/proc.ts";
import { startServer, stopServer } from "./lib/server.ts";
import { machineInfo } from "./lib/machine.ts";
import { formatTable, num } from "./lib/table.ts";

const { values } = orExit("bench:websocket", () =>
  parseArgs({
    options: {
      duration: { type: "string", default: "5" },
      connections: { type: "string", default: "50" },
      inflight: { type: "string", default: "16" },
      idle: { type: "string", default: "2000" },
    },
    strict: true,
  }));
const seconds = numberFlag("bench:websocket", "duration", values.duration!, { min: 1 });
const connections = numberFlag("bench:websocket", "connections", values.connections!, {
  min: 1,
  integer: true,
});
const inflight = numberFlag("bench:websocket", "inflight", values.inflight!, {
  min: 1,
  integer: true,
});
const idleCount = numberFlag("bench:websocket", "idle", values.idle!, { min: 0, integer: true });

const PAYLOAD = 64;
const IN_FRAME = 2 + PAYLOAD; // what the server sends back: unmasked

/** `count` masked text frames of 64 bytes, back to back. */
function frames(count: number): Uint8Array {
  const one = new Uint8Array(2 + 4 + PAYLOAD);
  one[0] = 0x81;
  one[1] = 0x80 | PAYLOAD;
  const key = [0x11, 0x22, 0x33, 0x44];
  one.set(key, 2);
  for (let i = 0; i < PAYLOAD; i++) one[6 + i] = (0x61 + (i % 26)) ^ key[i & 3];
  const out = new Uint8Array(one.length * count);
  for (let k = 0; k < count; k++) out.set(one, k * one.length);
  return out;
}

/** Per connection: its upgrade, bytes of a partial frame. */
interface State {
  upgrade: UpgradeReader;
  partial: number;
}

/** Opens `n` upgraded connections on `reactor`; `onFrames(conn, k)` gets each read's whole frames. */
function openSockets(
  reactor: Reactor,
  port: number,
  n: number,
  onOpen: (conn: Connection) => void,
  onFrames: (conn: Connection, k: number) => void,
): { conns: Connection[]; opened: () => number } {
  const context = new ConnectionContext(reactor, { limits: CLIENT_LIMITS, timeouts: null });
  const states = new Map<Connection, State>();
  let opened = 0;
  const protocol: Protocol = {
    data(conn, buf, start, end) {
      const st = states.get(conn)!;
      if (!st.upgrade.upgraded) {
        const at = st.upgrade.feed(buf.subarray(start, end));
        if (at < 0) return;
        opened++;
        onOpen(conn);
        start += at;
      }
      const bytes = st.partial + end - start;
      const k = Math.floor(bytes / IN_FRAME);
      st.partial = bytes - k * IN_FRAME;
      if (k > 0) onFrames(conn, k);
    },
  };
  const conns: Connection[] = [];
  for (let i = 0; i < n; i++) {
    const c = new Connection(context, connectTcp("127.0.0.1", port).fd, protocol);
    states.set(c, { upgrade: new UpgradeReader(), partial: 0 });
    c.open();
    c.write(WS_UPGRADE_REQUEST);
    conns.push(c);
  }
  return { conns, opened: () => opened };
}

async function echo(port: number, ms: number): Promise<number> {
  const reactor = await Reactor.create();
  const batch = frames(inflight);
  const one = 2 + 4 + PAYLOAD;
  let echoed = 0;
  let running = true;
  const { conns } = openSockets(
    reactor,
    port,
    connections,
    (conn) => conn.write(batch),
    (conn, k) => {
      echoed += k;
      if (running) conn.write(batch, 0, k * one);
    },
  );
  reactor.setTimer(ms, () => {
    running = false;
    reactor.stop();
  });
  await reactor.run();
  for (const c of conns) c.close();
  reactor.close();
  return echoed;
}

/** Opens `idleCount` sockets, waits until all are upgraded, returns the RSS delta per socket. */
async function idle(port: number, sample: () => number): Promise<number> {
  if (idleCount === 0) return NaN;
  const reactor = await Reactor.create();
  const before = sample();
  const { conns: open, opened } = openSockets(reactor, port, idleCount, () => {}, () => {});
  const deadline = Date.now() + 30_000;
  const check = () => {
    if (opened() === idleCount || Date.now() > deadline) reactor.stop();
    else reactor.setTimer(10, check);
  };
  reactor.setTimer(10, check);
  await reactor.run();
  await new Promise((r) => setTimeout(r, 500)); // let the server settle
  const per = (sample() - before) / idleCount;
  for (const c of open) c.close();
  reactor.close();
  return per;
}

const servers = [
  { name: "deno serve", cmd: `${Deno.execPath()} serve -A --port $PORT bench/apps/ws_echo.ts` },
  {
    name: "ours",
    cmd: `${Deno.execPath()} run -A main.ts serve --module bench/apps/ws_echo.ts --port $PORT`,
  },
];

const rows: string[][] = [];
const results: Record<string, number | string>[] = [];
for (const s of servers) {
  const h = await startServer({
    name: s.name,
    cmd: s.cmd,
    cwd: new URL("..", import.meta.url).pathname,
  });
  try {
    await echo(h.port, Math.min(2000, seconds * 1000)); // warm-up (JIT)
    const t = h.sample().cpuTicks;
    const n = await echo(h.port, seconds * 1000);
    const cpu = ticksToSeconds(h.sample().cpuTicks - t);
    const rssPerSocket = await idle(h.port, () => h.sample().rssBytes);
    const r = {
      server: s.name,
      messagesPerSecond: n / seconds,
      cpuMicrosPerMessage: (cpu * 1e6) / n,
      rssBytesPerIdleSocket: rssPerSocket,
      rssMiB: h.sample().rssBytes / (1 << 20),
    };
    results.push(r);
    rows.push([
      s.name,
      num(r.messagesPerSecond),
      num(r.cpuMicrosPerMessage, 2),
      num(r.rssBytesPerIdleSocket),
      num(r.rssMiB, 1),
    ]);
  } finally {
    await stopServer(h);
  }
}
console.log(
  `WebSocket echo: ${connections} connections x ${inflight} in flight, ${PAYLOAD}-byte text, ${seconds} s`,
);
console.log(formatTable(
  ["server", "messages/s", "cpu µs/msg", "RSS B/idle socket", "RSS MiB"],
  rows,
));
const [deno, ours] = results;
console.log(
  `ours vs deno serve: CPU per message ${
    num((ours.cpuMicrosPerMessage as number) / (deno.cpuMicrosPerMessage as number), 2)
  }x`,
);
const out = new URL("results/", import.meta.url).pathname;
await Deno.mkdir(out, { recursive: true });
await Deno.writeTextFile(
  `${out}websocket-latest.json`,
  JSON.stringify(
    { machine: machineInfo(), seconds, connections, inflight, idleCount, results },
    null,
    2,
  ),
);
