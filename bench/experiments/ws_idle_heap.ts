/**
 * Experiment "ws_idle_heap": JS heap and RSS of an idle open WebSocket on the
 * reactor (issue 15's target: at most 2 KiB of JS heap per idle socket).
 *
 *   deno run -A --v8-flags=--expose-gc bench/experiments/ws_idle_heap.ts [--sockets 2000]
 *
 * The server (`serve()`, an echo app keeping each socket in a Set, as a chat
 * room does) runs in this process; a child process opens the sockets (raw
 * upgrade requests) and holds them. Heap used (after a full GC) and RSS are
 * read before and after, and divided by the sockets.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { numberFlag, orExit } from "../lib/flags.ts";
import { serve } from "../../mod.ts";

const { values } = orExit(
  "ws_idle_heap",
  () => parseArgs({ options: { sockets: { type: "string", default: "2000" } }, strict: true }),
);
const count = numberFlag("ws_idle_heap", "sockets", values.sockets!, { min: 1, integer: true });
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error("run with --v8-flags=--expose-gc");
  Deno.exit(2);
}

const room = new Set<WebSocket>();
const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onopen = () => room.add(socket);
  socket.onmessage = (e) => socket.send(e.data);
  socket.onclose = () => room.delete(socket);
  return response;
});

const settle = async () => {
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 100));
    gc();
  }
};
const rss = () => Deno.memoryUsage().rss;
await settle();
const heap0 = Deno.memoryUsage().heapUsed;
const snapshot = Deno.env.get("WS_HEAP_SNAPSHOT"); // a path prefix: write before/after snapshots
const v8 = snapshot ? await import("node:v8") : null;
v8?.writeHeapSnapshot(`${snapshot}-before.heapsnapshot`);
const rss0 = rss();

const client = `
const n = ${count}, port = ${server.addr.port};
const req = new TextEncoder().encode("GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n");
const conns = [];
for (let i = 0; i < n; i += 100) {
  await Promise.all(Array.from({ length: Math.min(100, n - i) }, async () => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    await c.write(req);
    await c.read(new Uint8Array(512));
    conns.push(c);
  }));
}
console.log("open");
setInterval(() => {}, 1000);
`;
const child = new Deno.Command(Deno.execPath(), {
  args: ["eval", client],
  stdout: "piped",
  stderr: "inherit",
}).spawn();
const reader = child.stdout.getReader();
while (room.size < count) {
  await new Promise((r) => setTimeout(r, 20));
}
await settle();
const heap1 = Deno.memoryUsage().heapUsed;
v8?.writeHeapSnapshot(`${snapshot}-after.heapsnapshot`);
const rss1 = rss();
console.log(
  `${count} idle WebSockets: JS heap ${((heap1 - heap0) / count).toFixed(0)} B/socket, ` +
    `RSS ${
      ((rss1 - rss0) / count).toFixed(0)
    } B/socket (server in this process, Deno ${Deno.version.deno})`,
);
child.kill("SIGKILL");
await child.status;
reader.releaseLock();
await server.shutdown();
