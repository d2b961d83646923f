/**
 * WebSocket soak: every message echoed byte-exact, for as long as asked
 * (issue 15: 10 minutes, nothing lost).
 *
 *   deno run -A bench/ws_soak.ts [--seconds 600] [--connections 50] [--inflight 16]
 *
 * Runs bench/apps/ws_echo.ts under `reactor serve --module` in its own
 * session. C connections each keep F messages in flight: text and binary,
 * 0 bytes to 256 KiB (mostly small, some past the read buffer so they span
 * reads), each carrying its connection and sequence number; every echo is
 * compared with what was sent, in order. Prints messages, bytes, mismatches
 * and the server's RSS and CPU every 10 s; exit 1 on any mismatch or loss.
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

const { values } = orExit("ws_soak", () =>
  parseArgs({
    options: {
      seconds: { type: "string", default: "600" },
      connections: { type: "string", default: "50" },
      inflight: { type: "string", default: "16" },
    },
    strict: true,
  }));
const seconds = numberFlag("ws_soak", "seconds", values.seconds!, { min: 1 });
const connections = numberFlag("ws_soak", "connections", values.connections!, {
  min: 1,
  integer: true,
});
const inflight = numberFlag("ws_soak", "inflight", values.inflight!, { min: 1, integer: true });

const enc = new TextEncoder();

/** A deterministic message: opcode and payload for connection `c`, number `n`. */
function message(c: number, n: number): { opcode: number; payload: Uint8Array } {
  const r = (Math.imul(n + 1, 2654435761) ^ Math.imul(c + 1, 40503)) >>> 0;
  const size = r % 100 === 0 ? (r >>> 8) % (256 << 10) : r % 10 === 0 ? (r >>> 8) % 8192 : r % 200;
  const text = (r & 1) === 0;
  if (text) {
    const head = `${c}:${n}:`;
    const body = "é✓a".repeat(Math.ceil(size / 6)).slice(0, Math.max(0, size / 2));
    return { opcode: 1, payload: enc.encode(head + body) };
  }
  const p = new Uint8Array(size + 8);
  new DataView(p.buffer).setUint32(0, c);
  new DataView(p.buffer).setUint32(4, n);
  for (let i = 8; i < p.length; i++) p[i] = (i * 31 + n) & 0xff;
  return { opcode: 2, payload: p };
}

/** The client frame (masked) of a message. */
function clientFrame(opcode: number, p: Uint8Array): Uint8Array {
  const n = p.length;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const out = new Uint8Array(2 + ext + 4 + n);
  out[0] = 0x80 | opcode;
  out[1] = 0x80 | (n < 126 ? n : n < 65536 ? 126 : 127);
  const view = new DataView(out.buffer);
  if (ext === 2) view.setUint16(2, n);
  else if (ext === 8) view.setUint32(6, n);
  const at = 2 + ext;
  const key = [0x5a, 0xa5, 0x3c, 0xc3];
  out.set(key, at);
  for (let i = 0; i < n; i++) out[at + 4 + i] = p[i] ^ key[i & 3];
  return out;
}

interface Peer {
  id: number;
  upgrade: UpgradeReader;
  buf: Uint8Array;
  sent: number;
  expected: { opcode: number; payload: Uint8Array }[];
}

let echoed = 0;
let bytes = 0;
let mismatches = 0;

async function run(port: number, ms: number): Promise<Peer[]> {
  const reactor = await Reactor.create();
  const context = new ConnectionContext(reactor, { limits: CLIENT_LIMITS, timeouts: null });
  let running = true;
  const peers = new Map<Connection, Peer>();
  const send = (conn: Connection, p: Peer) => {
    const m = message(p.id, p.sent++);
    p.expected.push(m);
    conn.write(clientFrame(m.opcode, m.payload));
  };
  const protocol: Protocol = {
    data(conn, data, start, end) {
      const p = peers.get(conn)!;
      let chunk = data.subarray(start, end);
      if (!p.upgrade.upgraded) {
        const at = p.upgrade.feed(chunk);
        if (at < 0) return;
        chunk = chunk.subarray(at);
        for (let k = 0; k < inflight; k++) send(conn, p);
      }
      const b = new Uint8Array(p.buf.length + chunk.length);
      b.set(p.buf);
      b.set(chunk, p.buf.length);
      let i = 0;
      for (;;) {
        if (b.length - i < 2) break;
        let len = b[i + 1] & 0x7f;
        let h = 2;
        if (len === 126) {
          if (b.length - i < 4) break;
          len = (b[i + 2] << 8) | b[i + 3];
          h = 4;
        } else if (len === 127) {
          if (b.length - i < 10) break;
          len = new DataView(b.buffer, i + 2).getUint32(4);
          h = 10;
        }
        if (b.length - i < h + len) break;
        const want = p.expected.shift();
        const got = b.subarray(i + h, i + h + len);
        const opcode = b[i] & 0x0f;
        if (
          want === undefined || want.opcode !== opcode || want.payload.length !== len ||
          want.payload.some((x, k) => x !== got[k])
        ) {
          mismatches++;
          console.error(`connection ${p.id}: echo ${p.sent - p.expected.length - 1} differs`);
        }
        echoed++;
        bytes += len;
        i += h + len;
        if (running) send(conn, p);
      }
      p.buf = b.slice(i);
    },
  };
  for (let id = 0; id < connections; id++) {
    const c = new Connection(context, connectTcp("127.0.0.1", port).fd, protocol);
    peers.set(c, {
      id,
      upgrade: new UpgradeReader(),
      buf: new Uint8Array(0),
      sent: 0,
      expected: [],
    });
    c.open();
    c.write(WS_UPGRADE_REQUEST);
  }
  reactor.setTimer(ms, () => {
    running = false;
    // What is in flight comes back; then stop.
    const drain = () => {
      if ([...peers.values()].every((p) => p.expected.length === 0)) reactor.stop();
      else reactor.setTimer(50, drain);
    };
    reactor.setTimer(0, drain);
  });
  reactor.setTimer(ms + 30_000, () => reactor.stop()); // what never comes back is lost
  await reactor.run();
  for (const c of peers.keys()) c.close();
  reactor.close();
  return [...peers.values()];
}

const h = await startServer({
  name: "ours",
  cmd: `${Deno.execPath()} run -A main.ts serve --module bench/apps/ws_echo.ts --port $PORT`,
  cwd: new URL("..", import.meta.url).pathname,
});
let lost = 0;
try {
  const started = performance.now();
  const cpu0 = h.sample().cpuTicks;
  const report = setInterval(() => {
    const s = h.sample();
    console.log(
      `${((performance.now() - started) / 1000).toFixed(0)} s: ${echoed} echoed, ` +
        `${(bytes / 2 ** 20).toFixed(0)} MiB, ${mismatches} mismatches, server RSS ${
          (s.rssBytes / 2 ** 20).toFixed(1)
        } MiB, CPU ${ticksToSeconds(s.cpuTicks - cpu0).toFixed(1)} s`,
    );
  }, 10_000);
  const peers = await run(h.port, seconds * 1000);
  clearInterval(report);
  lost = peers.reduce((n, p) => n + p.expected.length, 0);
  const sent = peers.reduce((n, p) => n + p.sent, 0);
  console.log(
    `soak ${seconds} s, ${connections} x ${inflight}: ${sent} sent, ${echoed} echoed ` +
      `(${(bytes / 2 ** 20).toFixed(0)} MiB), ${mismatches} mismatches, ${lost} lost`,
  );
} finally {
  await stopServer(h);
}
Deno.exit(mismatches === 0 && lost === 0 ? 0 : 1);
