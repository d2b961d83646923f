/**
 * What an awaiting handler costs in latency at light load: sequential
 * requests on one keep-alive connection to `deno serve` and to
 * `reactor serve --module`, both running bench/apps/awaiting.ts; the median
 * and p90 per route. Issue 12's target: ours at most 0.1 ms over deno serve.
 *
 *   deno run -A bench/experiments/async_latency.ts [--requests N]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { freePort, waitForPort } from "../lib/server.ts";

const { values } = parseArgs({ options: { requests: { type: "string" } }, strict: true });
const N = Number(values.requests ?? 2000);
const ROOT = new URL("../..", import.meta.url).pathname;
const MODULE = ROOT + "bench/apps/awaiting.ts";
const ROUTES = ["/", "/micro", "/timer", "/file", "/fetch"];

/** Sends `n` GETs of `path` one after the other on one connection; returns the latencies (ms). */
async function sequential(port: number, path: string, n: number): Promise<number[]> {
  const conn = await Deno.connect({ port });
  const req = new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  const buf = new Uint8Array(4096);
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await conn.write(req);
    // One small response: read until the body (after the blank line) is complete.
    let text = "";
    for (;;) {
      const k = await conn.read(buf);
      if (k === null) throw new Error("closed");
      text += new TextDecoder().decode(buf.subarray(0, k));
      const end = text.indexOf("\r\n\r\n");
      if (end < 0) continue;
      const len = Number(text.match(/content-length: (\d+)/i)?.[1] ?? -1);
      if (len >= 0 && text.length >= end + 4 + len) break;
    }
    times.push(performance.now() - t0);
  }
  conn.close();
  return times;
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * p)];

const upstream = Deno.serve(
  { port: 0, hostname: "127.0.0.1", onListen() {} },
  () => new Response("up"),
);
const env = { UPSTREAM_URL: `http://127.0.0.1:${upstream.addr.port}/` };
const servers: [string, (port: number) => string[]][] = [
  ["deno serve", (port) => ["serve", "-A", "--port", String(port), "--host", "127.0.0.1", MODULE]],
  [
    "reactor",
    (
      port,
    ) => [
      "run",
      "-A",
      ROOT + "main.ts",
      "serve",
      "--port",
      String(port),
      "--module",
      MODULE,
      "--log-level",
      "warning",
    ],
  ],
];
const results: Record<string, Record<string, [number, number]>> = {};
for (const [name, args] of servers) {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: args(port),
    env,
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  try {
    await waitForPort(port, 30_000, child.status);
    await sequential(port, "/micro", 300); // warm up
    results[name] = {};
    for (const route of ROUTES) {
      const t = await sequential(port, route, N);
      results[name][route] = [pct(t, 0.5), pct(t, 0.9)];
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}
await upstream.shutdown();
console.log(`sequential requests on one connection, ${N} per route; median / p90 in ms`);
console.log("route      " + servers.map(([n]) => n.padEnd(20)).join("") + "ours - deno (median)");
for (const route of ROUTES) {
  const cells = servers.map(([n]) => {
    const [m, p] = results[n][route];
    return `${m.toFixed(3)} / ${p.toFixed(3)}`.padEnd(20);
  });
  const d = results["reactor"][route][0] - results["deno serve"][route][0];
  console.log(route.padEnd(11) + cells.join("") + `${d >= 0 ? "+" : ""}${d.toFixed(3)}`);
}
