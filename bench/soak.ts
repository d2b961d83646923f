/**
 * Soak: our HTTP server under full wrk load for a long run (default 60 s,
 * alternating plain and 16-deep pipelined phases), sampling the JS heap and
 * RSS from /metrics every few seconds. Passes when the heap after the run is
 * no larger than early in it (no leak per request) and every response was
 * good.
 *
 *   deno run -A bench/soak.ts [--seconds 60] [--connections 50]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { numberFlag, orExit } from "./lib/flags.ts";
import { errorCount, runWrk } from "./lib/wrk.ts";
import { httpGet, startServer, stopServer } from "./lib/server.ts";
import { which } from "./lib/machine.ts";

const { values } = orExit("soak", () =>
  parseArgs({
    options: {
      seconds: { type: "string", default: "60" },
      connections: { type: "string", default: "50" },
    },
    strict: true,
  }));
const seconds = numberFlag("soak", "seconds", values.seconds!, { min: 1 });
const connections = numberFlag("soak", "connections", values.connections!, {
  min: 1,
  integer: true,
});
if (!which("wrk")) {
  console.error("soak: wrk is missing: install it with 'sudo apt-get install wrk'");
  Deno.exit(2);
}

const root = new URL("..", import.meta.url).pathname;
const pipeline = new URL("pipeline.lua", import.meta.url).pathname;
const server = await startServer({
  name: "soak",
  cmd: `${Deno.execPath()} run -A main.ts serve --app http --port $PORT`,
  cwd: root,
});

async function memory(): Promise<{ heap: number; rss: number }> {
  const { body } = await httpGet(server.port, "/metrics");
  const get = (name: string) => Number(body.match(new RegExp(`^reactor_${name} (\\d+)`, "m"))?.[1]);
  return { heap: get("heap_used_bytes"), rss: get("rss_bytes") };
}

const samples: { t: number; heap: number; rss: number; requests: number }[] = [];
let requests = 0;
let errors = 0;
const t0 = performance.now();
const sampler = setInterval(async () => {
  const m = await memory();
  samples.push({ t: (performance.now() - t0) / 1000, ...m, requests });
  const s = samples.at(-1)!;
  console.log(
    `${s.t.toFixed(0).padStart(4)} s  heap ${(s.heap / 1048576).toFixed(2)} MiB` +
      `  rss ${(s.rss / 1048576).toFixed(1)} MiB  requests ${requests}`,
  );
}, 5000);

const phase = 10;
try {
  for (let done = 0; done < seconds; done += phase) {
    const pipelined = (done / phase) % 2 === 1;
    const r = await runWrk({
      url: `http://127.0.0.1:${server.port}/plaintext`,
      connections,
      seconds: Math.min(phase, seconds - done),
      script: pipelined ? pipeline : undefined,
      env: pipelined ? { DEPTH: "16" } : undefined,
    });
    requests += r.requests;
    errors += errorCount(r.errors);
  }
} finally {
  clearInterval(sampler);
}
const end = await memory();
await stopServer(server);
// Compare with the first sample after warm-up (the JIT and caches settle in the first seconds).
const early = samples[Math.min(1, samples.length - 1)] ?? end;
const grew = end.heap - early.heap;
console.log(
  `\n${requests} requests in ${seconds} s, ${errors} errors; heap ${
    (early.heap / 1048576).toFixed(2)
  } MiB at ${early.t.toFixed(0)} s -> ${(end.heap / 1048576).toFixed(2)} MiB at the end (${
    grew >= 0 ? "+" : ""
  }${(grew / 1024).toFixed(0)} KiB), ${
    (grew / Math.max(1, requests - early.requests)).toFixed(4)
  } bytes/request`,
);
const ok = errors === 0 && grew < 1 << 20;
console.log(ok ? "soak: PASS" : "soak: FAIL (errors, or the heap grew by 1 MiB or more)");
Deno.exit(ok ? 0 : 1);
