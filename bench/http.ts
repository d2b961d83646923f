/**
 * Side-by-side HTTP "plaintext" benchmark: our server against Deno.serve, Deno.listen,
 * node:http and a plain C epoll server, one at a time, on the same machine in the same run.
 *
 *   deno task bench [--duration S] [--connections N] [--depth D] [--servers a,b] ...
 *
 * For each server: start it in its own session, warm up, run wrk without and with
 * pipelining, and divide the server's CPU time (all of its processes) by the requests
 * served. See docs/bench.md.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { parseNumberFlag } from "./lib/flags.ts";
import { dirname, relative, resolve } from "node:path";
import { exists, type MachineInfo, machineInfo, which } from "./lib/machine.ts";
import { clockTicksPerSecond, type GroupSample, type SystemCpu, systemCpu } from "./lib/proc.ts";
import {
  freePort,
  httpGet,
  type ServerHandle,
  shellQuote,
  startServer,
  stopAllServers,
  stopServer,
} from "./lib/server.ts";
import { barChartSvg } from "./lib/svg.ts";
import { formatTable, num } from "./lib/table.ts";
import { errorCount, runWrk, type WrkErrors, type WrkResult, wrkVersion } from "./lib/wrk.ts";

const HELP = `Usage: deno task bench [options]

Side-by-side HTTP benchmark on 127.0.0.1: each server in turn (never two at once) gets a
1 s wrk warm-up, a plain run and a pipelined run; the server's CPU time is divided by the
requests it served. Needs wrk (sudo apt-get install wrk).

Options:
  --duration S      seconds per wrk run (default 5)
  --connections N   wrk connections, one client thread (default 50)
  --depth D         requests per write in the pipelined run (default 16)
  --servers LIST    comma-separated subset of: ours, deno-serve, deno-listen, node-http, c
                    (default: all; node-http needs node, c needs cc and the shared C source)
  --out DIR         where to write http-<time>.json, http-latest.json, http-latest.svg
                    (default bench/results)
  --rounds N        run every server N times, alternating, and report each server's
                    median run (default 1; 3 or 5 on a noisy machine)
  --ours-cmd CMD    shell command for "ours"; it must serve HTTP/1.1 on 127.0.0.1:$PORT
                    (default: deno run --allow-all main.ts serve --app http --port $PORT)
  -h, --help        show this help

Lower CPU µs/request is better. rps is capped by the single wrk thread on small machines,
so compare CPU per request, and only between servers of the same run. See docs/bench.md.`;

/** All server names, in run order. */
const ALL_SERVERS = ["ours", "deno-serve", "deno-listen", "node-http", "c"] as const;
type ServerName = typeof ALL_SERVERS[number];

interface Options {
  duration: number;
  connections: number;
  depth: number;
  servers: ServerName[];
  out: string;
  oursCmd: string | null;
  rounds: number;
}

/** One wrk run against one server, with the server's CPU time across it. */
interface RunFigures {
  requests: number;
  seconds: number;
  rps: number;
  cpuTicks: number;
  cpuSeconds: number;
  /** Server CPU microseconds per request. */
  cpuUsPerReq: number | null;
  /** Server CPU seconds per wall second: how many cores it kept busy. */
  cores: number;
  /** All CPUs' busy time per wall second (server, wrk and anything else), from /proc/stat. */
  machineBusyCores: number;
  /** Hypervisor steal per wall second: CPU this VM wanted but did not get. */
  stealCores: number;
  latencyMeanMs: number | null;
  latencyMaxMs: number | null;
  errors: WrkErrors;
}

interface ServerResult {
  name: ServerName;
  cmd: string | null;
  status: "ok" | "skipped" | "failed";
  note: string | null;
  port: number | null;
  plain: RunFigures | null;
  pipelined: RunFigures | null;
  rssBytes: number | null;
  rssMiB: number | null;
  /** Summed VmHWM (peak RSS) of the server's processes at the end. */
  peakRssMiB: number | null;
  processes: number | null;
  logPath: string | null;
}

interface Ratio {
  peer: ServerName;
  /** ours CPU/request divided by the peer's, without pipelining; < 1: ours uses less. */
  plain: number | null;
  /** Same with pipelining. */
  pipelined: number | null;
}

const benchDir = import.meta.dirname!;
const repoDir = dirname(benchDir);
const WARMUP_S = 1;
const MiB = 1024 * 1024;

function fail(message: string, code = 2): never {
  console.error(`bench: ${message}`);
  Deno.exit(code);
}

function positiveInt(flag: string, value: string | undefined, dflt: number): number {
  if (value === undefined) return dflt;
  try {
    return parseNumberFlag(flag, value, { min: 1, integer: true });
  } catch (e) {
    fail(`${(e as Error).message} (see --help)`);
  }
}

function parseOptions(args: string[]): Options {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        duration: { type: "string" },
        connections: { type: "string" },
        depth: { type: "string" },
        servers: { type: "string" },
        out: { type: "string" },
        "ours-cmd": { type: "string" },
        rounds: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    fail(`${(e as Error).message} (see --help)`);
  }
  const v = parsed.values;
  if (v.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  let servers: ServerName[] = [...ALL_SERVERS];
  if (v.servers !== undefined) {
    const wanted = v.servers.split(",").map((s) => s.trim()).filter(Boolean);
    const unknown = wanted.filter((s) => !(ALL_SERVERS as readonly string[]).includes(s));
    if (unknown.length || wanted.length === 0) {
      fail(`unknown server '${unknown.join(",")}': choose from ${ALL_SERVERS.join(", ")}`);
    }
    servers = ALL_SERVERS.filter((s) => wanted.includes(s)); // run order stays fixed
  }
  return {
    duration: positiveInt("duration", v.duration, 5),
    connections: positiveInt("connections", v.connections, 50),
    depth: positiveInt("depth", v.depth, 16),
    servers,
    out: v.out !== undefined ? resolve(v.out) : resolve(benchDir, "results"),
    oursCmd: v["ours-cmd"] ?? null,
    rounds: positiveInt("rounds", v.rounds, 1),
  };
}

function log(message: string): void {
  console.error(message);
}

async function commandOutput(cmd: string, args: string[]): Promise<string | null> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    if (!out.success) return null;
    return new TextDecoder().decode(out.stdout).trim().split("\n")[0] || null;
  } catch {
    return null;
  }
}

/** A server to run, or the reason it cannot run on this machine. */
type Plan = { name: ServerName; cmd: string } | { name: ServerName; skip: string };

/** Works out the command of each requested server; compiles the C server into `tmp`. */
async function plan(opts: Options, tmp: string): Promise<Plan[]> {
  const deno = shellQuote(Deno.execPath());
  const anchor = (file: string) =>
    `${deno} run --no-config --allow-net --allow-env=PORT ${
      shellQuote(resolve(benchDir, "anchors", file))
    }`;
  const plans: Plan[] = [];
  for (const name of opts.servers) {
    switch (name) {
      case "ours":
        if (opts.oursCmd !== null) plans.push({ name, cmd: opts.oursCmd });
        else if (!exists(resolve(repoDir, "main.ts"))) {
          plans.push({ name, skip: "main.ts not found (try --ours-cmd 'CMD')" });
        } else {
          plans.push({
            name,
            cmd: `${deno} run --allow-all main.ts serve --app http --port $PORT`,
          });
        }
        break;
      case "deno-serve":
        plans.push({ name, cmd: anchor("deno_serve.ts") });
        break;
      case "deno-listen":
        plans.push({ name, cmd: anchor("deno_listen.ts") });
        break;
      case "node-http": {
        const node = which("node");
        if (node) {
          plans.push({
            name,
            cmd: `${shellQuote(node)} ${shellQuote(resolve(benchDir, "anchors", "node_http.mjs"))}`,
          });
        } else plans.push({ name, skip: "node is not on PATH" });
        break;
      }
      case "c": {
        const src = resolve(repoDir, "..", "shared", "bench", "c_epoll_server.c");
        const cc = which("cc");
        if (!exists(src)) {
          plans.push({ name, skip: `optional C anchor: ${src} not found` });
        } else if (!cc) {
          plans.push({ name, skip: "optional C anchor: cc is not on PATH" });
        } else {
          const bin = `${tmp}/c_epoll_server`;
          const out = await new Deno.Command(cc, {
            args: ["-O2", "-o", bin, src],
            stdout: "piped",
            stderr: "piped",
          }).output();
          if (out.success) plans.push({ name, cmd: `${shellQuote(bin)} http $PORT` });
          else {
            const err = new TextDecoder().decode(out.stderr).trim().split("\n")[0];
            plans.push({ name, skip: `cc failed to build ${src}: ${err}` });
          }
        }
        break;
      }
    }
  }
  return plans;
}

interface Mark {
  server: GroupSample;
  system: SystemCpu;
  at: number;
}

function mark(server: ServerHandle): Mark {
  return { server: server.sample(), system: systemCpu(), at: performance.now() };
}

function figures(wrk: WrkResult, before: Mark, after: Mark, hz: number): RunFigures {
  const cpuTicks = after.server.cpuTicks - before.server.cpuTicks;
  const cpuSeconds = cpuTicks / hz;
  const wall = (after.at - before.at) / 1000;
  return {
    requests: wrk.requests,
    seconds: wrk.seconds,
    rps: wrk.rps,
    cpuTicks,
    cpuSeconds,
    cpuUsPerReq: wrk.requests > 0 ? cpuSeconds * 1e6 / wrk.requests : null,
    cores: wrk.seconds > 0 ? cpuSeconds / wrk.seconds : 0,
    machineBusyCores: (after.system.busy - before.system.busy) / hz / wall,
    stealCores: (after.system.steal - before.system.steal) / hz / wall,
    latencyMeanMs: wrk.latencyMeanMs,
    latencyMaxMs: wrk.latencyMaxMs,
    errors: wrk.errors,
  };
}

function describeErrors(e: WrkErrors): string {
  return Object.entries(e).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(", ");
}

/** Starts one server, loads it, and always stops its whole session. */
async function benchOne(
  p: { name: ServerName; cmd: string },
  opts: Options,
  ctx: { logDir: string; usedPorts: Set<number>; hz: number; signal: AbortSignal },
): Promise<ServerResult> {
  const result = emptyResult(p.name, p.cmd, "failed", null);
  const port = freePort(ctx.usedPorts);
  ctx.usedPorts.add(port);
  result.port = port;
  log(`${p.name}: starting on 127.0.0.1:${port}: ${p.cmd}`);
  let server: ServerHandle | null = null;
  try {
    server = await startServer({
      name: p.name,
      cmd: p.cmd,
      port,
      cwd: repoDir,
      logDir: ctx.logDir,
    });
    result.logPath = server.logPath;
    const check = await httpGet(port, "/plaintext");
    if (check.status !== 200 || !check.body.includes("Hello, World!")) {
      throw new Error(
        `GET /plaintext answered ${check.status || "nothing"} ${
          JSON.stringify(check.body.slice(0, 60))
        }` +
          `, not 200 "Hello, World!"`,
      );
    }
    const url = `http://127.0.0.1:${port}/`;
    const base = { url, connections: opts.connections, signal: ctx.signal };
    log(`${p.name}: warm-up ${WARMUP_S} s`);
    await runWrk({ ...base, seconds: WARMUP_S });

    log(`${p.name}: plain ${opts.duration} s`);
    let before = mark(server);
    const plain = await runWrk({ ...base, seconds: opts.duration });
    let after = mark(server);
    result.plain = figures(plain, before, after, ctx.hz);

    log(`${p.name}: pipelined x${opts.depth} ${opts.duration} s`);
    before = mark(server);
    const piped = await runWrk({
      ...base,
      seconds: opts.duration,
      script: resolve(benchDir, "pipeline.lua"),
      env: { DEPTH: String(opts.depth) },
    });
    after = mark(server);
    result.pipelined = figures(piped, before, after, ctx.hz);

    const end = after.server;
    result.rssBytes = end.rssBytes;
    result.rssMiB = end.rssBytes / MiB;
    result.peakRssMiB = end.hwmBytes / MiB;
    result.processes = end.pids.length;
    if (end.pids.length === 0) throw new Error("the server died during the run");
    result.status = "ok";
    const notes = [
      ["plain", result.plain],
      ["pipelined", result.pipelined],
    ].flatMap(([label, r]) => {
      const f = r as RunFigures;
      const n: string[] = [];
      if (errorCount(f.errors)) n.push(`wrk ${label} errors: ${describeErrors(f.errors)}`);
      // wrk -t1 keeps at most about one core busy; more than that beside the server is
      // someone else's work competing with the benchmark.
      const others = f.machineBusyCores - f.cores - 1;
      if (others > 0.25 || f.stealCores > 0.1) {
        n.push(
          `busy machine during the ${label} run: ${others.toFixed(2)} cores used by other ` +
            `processes, ${f.stealCores.toFixed(2)} stolen by the hypervisor: figures are noisy`,
        );
      }
      return n;
    });
    if (notes.length) result.note = notes.join("; ");
  } catch (e) {
    result.status = "failed";
    result.note = ctx.signal.aborted ? "interrupted" : (e as Error).message;
  } finally {
    if (server) {
      const stop = await stopServer(server);
      if (stop.leftover.length) {
        result.note = `${result.note ? result.note + "; " : ""}could not kill pids ${
          stop.leftover.join(" ")
        }`;
      }
    }
  }
  return result;
}

function ratios(results: ServerResult[]): Ratio[] {
  const ours = results.find((r) => r.name === "ours" && r.status === "ok");
  if (!ours) return [];
  const div = (a: number | null | undefined, b: number | null | undefined) =>
    a != null && b != null && b > 0 ? a / b : null;
  return results.filter((r) => r.name !== "ours" && r.status === "ok").map((r) => ({
    peer: r.name,
    plain: div(ours.plain?.cpuUsPerReq, r.plain?.cpuUsPerReq),
    pipelined: div(ours.pipelined?.cpuUsPerReq, r.pipelined?.cpuUsPerReq),
  }));
}

function kilo(rps: number): string {
  if (rps >= 1e6) return `${(rps / 1e6).toFixed(2)}M`;
  if (rps >= 1e3) return `${(rps / 1e3).toFixed(rps >= 1e5 ? 0 : 1)}k`;
  return rps.toFixed(0);
}

function chart(
  results: ServerResult[],
  opts: Options,
  machine: MachineInfo,
  when: Date,
): string {
  const ok = results.filter((r) => r.status === "ok");
  return barChartSvg({
    title: "Server CPU time per request (lower is better)",
    subtitle:
      `wrk -t1 -c${opts.connections} -d${opts.duration}s, pipelined depth ${opts.depth} · ` +
      `${machine.cpuModel}, ${machine.nproc} CPUs, Linux ${machine.kernel} · Deno ${machine.deno} · ` +
      when.toISOString().slice(0, 16).replace("T", " ") + " UTC",
    yLabel: "CPU µs per request",
    series: [{ name: "plain" }, { name: `pipelined ×${opts.depth}` }],
    groups: ok.map((r) => ({
      label: r.name,
      sublabel: `${kilo(r.plain?.rps ?? 0)} | ${kilo(r.pipelined?.rps ?? 0)} req/s`,
      values: [r.plain?.cpuUsPerReq ?? null, r.pipelined?.cpuUsPerReq ?? null],
      highlight: r.name === "ours",
    })),
    footnote: "CPU = user + system time of all the server's processes during the wrk run, " +
      "divided by the requests served. Compare servers of the same run only.\n" +
      "Under each name: requests/s plain | pipelined (capped by the single wrk thread).",
  });
}

/** A result with no figures yet (a server about to run, or one skipped). */
function emptyResult(
  name: ServerName,
  cmd: string | null,
  status: ServerResult["status"],
  note: string | null,
): ServerResult {
  return {
    name,
    cmd,
    status,
    note,
    port: null,
    plain: null,
    pipelined: null,
    rssBytes: null,
    rssMiB: null,
    peakRssMiB: null,
    processes: null,
    logPath: null,
  };
}

/** The median of a server's rounds: plain and pipelined each picked by CPU per request. */
function medianResult(runs: ServerResult[]): ServerResult {
  const ok = runs.filter((r) => r.status === "ok");
  if (ok.length === 0) return runs[runs.length - 1];
  const pick = (k: "plain" | "pipelined") => {
    const sorted = ok.map((r) => r[k]).filter((f): f is RunFigures => f !== null)
      .sort((a, b) => (a.cpuUsPerReq ?? Infinity) - (b.cpuUsPerReq ?? Infinity));
    return sorted.length ? sorted[(sorted.length - 1) >> 1] : null;
  };
  return { ...ok[0], plain: pick("plain"), pipelined: pick("pipelined") };
}

async function main(): Promise<number> {
  const opts = parseOptions(Deno.args);
  const wrk = which("wrk");
  if (!wrk) fail("wrk is missing: install it with 'sudo apt-get install wrk'");

  const abort = new AbortController();
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) Deno.exit(130); // second Ctrl-C: give up waiting
    interrupted = true;
    log("bench: interrupted, stopping the server");
    abort.abort(); // kills wrk; benchOne then stops the server
    stopAllServers();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  const when = new Date();
  const hz = clockTicksPerSecond();
  const machine = machineInfo();
  const logDir = await Deno.makeTempDir({ prefix: "reactor-bench-" });
  const plans = await plan(opts, logDir);
  const tools = {
    wrk: await wrkVersion(wrk),
    node: which("node") ? await commandOutput("node", ["--version"]) : null,
    cc: which("cc") ? await commandOutput("cc", ["--version"]) : null,
  };
  log(
    `bench: ${machine.cpuModel}, ${machine.nproc} CPUs, Linux ${machine.kernel}, ` +
      `Deno ${machine.deno}, load ${machine.loadavg.map((l) => l.toFixed(2)).join(" ")}`,
  );
  log(
    `bench: wrk -t1 -c${opts.connections} -d${opts.duration}s, pipelined depth ${opts.depth}; ` +
      `logs in ${logDir}`,
  );

  const results: ServerResult[] = [];
  /** Every round's result per server, in round order (rounds alternate servers). */
  const rounds = new Map<ServerName, ServerResult[]>();
  const usedPorts = new Set<number>();
  try {
    for (let round = 1; round <= opts.rounds && !interrupted; round++) {
      if (opts.rounds > 1) log(`bench: round ${round} of ${opts.rounds}`);
      for (const p of plans) {
        if (interrupted) break;
        if ("skip" in p) {
          if (round === 1) log(`${p.name}: skipped: ${p.skip}`);
          rounds.set(p.name, [emptyResult(p.name, null, "skipped", p.skip)]);
          continue;
        }
        const r = await benchOne(p, opts, { logDir, usedPorts, hz, signal: abort.signal });
        if (interrupted) break;
        if (r.status === "failed") log(`${p.name}: FAILED: ${r.note}`);
        rounds.set(p.name, [...(rounds.get(p.name) ?? []), r]);
      }
    }
  } finally {
    await stopAllServers();
    try {
      await Deno.remove(`${logDir}/c_epoll_server`);
    } catch {
      // not built
    }
  }
  for (const runs of rounds.values()) results.push(medianResult(runs));

  if (interrupted) return 130;

  // Table.
  const d = opts.depth;
  const rows = results.map((r) =>
    r.status === "ok"
      ? [
        r.name,
        num(r.plain?.rps),
        num(r.plain?.cpuUsPerReq, 2),
        num(r.pipelined?.rps),
        num(r.pipelined?.cpuUsPerReq, 2),
        num(r.rssMiB, 1),
      ]
      : [r.name, r.status, "", "", "", ""]
  );
  console.log();
  console.log(
    formatTable(
      ["server", "rps", "cpu µs/req", `rps (pipelined ${d})`, "cpu µs/req (pipelined)", "RSS MiB"],
      rows,
    ),
  );
  for (const r of results) if (r.note) console.log(`  ${r.name}: ${r.note.split("\n")[0]}`);
  if (opts.rounds > 1) {
    console.log(`  (each server's median of ${opts.rounds} rounds; every round's cpu µs/req:)`);
    for (const [name, runs] of rounds) {
      const each = (k: "plain" | "pipelined") =>
        runs.map((r) => num(r[k]?.cpuUsPerReq, 2)).join(" ");
      if (runs[0].status !== "skipped") {
        console.log(`  ${name}: plain ${each("plain")}; pipelined ${each("pipelined")}`);
      }
    }
  }

  const rs = ratios(results);
  console.log();
  if (rs.length) {
    console.log("CPU per request, ours vs each peer (< 1 means ours uses less CPU):");
    console.log(
      formatTable(
        ["", "plain", `pipelined ${d}`],
        rs.map((x) => [
          `ours vs ${x.peer}`,
          x.plain === null ? "-" : `${x.plain.toFixed(2)}x`,
          x.pipelined === null ? "-" : `${x.pipelined.toFixed(2)}x`,
        ]),
      ),
    );
  } else {
    console.log("No ratios: 'ours' did not run, or no peer did.");
  }

  // Files.
  const stamp = when.toISOString().replace(/\.\d+Z$/, "Z").replaceAll(":", "-");
  const report = {
    benchmark: "http-plaintext",
    timestamp: when.toISOString(),
    machine,
    tools,
    parameters: {
      durationS: opts.duration,
      connections: opts.connections,
      depth: opts.depth,
      wrkThreads: 1,
      warmupS: WARMUP_S,
      clkTck: hz,
      servers: opts.servers,
      oursCmd: opts.oursCmd,
      rounds: opts.rounds,
    },
    servers: results,
    rounds: Object.fromEntries(rounds),
    ratios: rs,
  };
  await Deno.mkdir(opts.out, { recursive: true });
  const json = JSON.stringify(report, null, 2) + "\n";
  const jsonPath = resolve(opts.out, `http-${stamp}.json`);
  await Deno.writeTextFile(jsonPath, json);
  await Deno.writeTextFile(resolve(opts.out, "http-latest.json"), json);
  const svgPath = resolve(opts.out, "http-latest.svg");
  await Deno.writeTextFile(svgPath, chart(results, opts, machine, when));
  const show = (p: string) =>
    relative(Deno.cwd(), p).startsWith("..") ? p : relative(Deno.cwd(), p);
  console.log();
  console.log(
    `wrote ${show(jsonPath)}, http-latest.json, http-latest.svg; server logs in ${logDir}`,
  );

  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  return results.some((r) => r.status === "failed") ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
