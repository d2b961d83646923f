/**
 * Side-by-side HTTP benchmark, one server at a time, on the same machine in the same run.
 * Two scenarios:
 * - plaintext (default): our server against Deno.serve, Deno.listen, node:http and a plain C
 *   epoll server, all answering `GET /plaintext`;
 * - static: our server beside nginx, both serving the same generated directory (a 4 KiB and
 *   a 1 MiB file).
 *
 *   deno task bench [--duration S] [--connections N] [--depth D] [--servers a,b] ...
 *   deno task bench:static [...]        (the same as: deno task bench --scenario static)
 *
 * For each server and each URL of the scenario: start the server in its own session, warm
 * up, run wrk without and with pipelining, and divide the server's CPU time (all of its
 * processes) by the requests served. See docs/bench.md.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { parseNumberFlag } from "./lib/flags.ts";
import { dirname, relative, resolve } from "node:path";
import { buildC, exists, type MachineInfo, machineInfo, which } from "./lib/machine.ts";
import { clockTicksPerSecond, type GroupSample, type SystemCpu, systemCpu } from "./lib/proc.ts";
import {
  freePort,
  httpGet,
  httpGetBytes,
  type ServerHandle,
  shellQuote,
  startServer,
  stopAllServers,
  stopServer,
} from "./lib/server.ts";
import { barChartSvg, stackSvgs } from "./lib/svg.ts";
import { formatTable, num } from "./lib/table.ts";
import { errorCount, runWrk, type WrkErrors, type WrkResult, wrkVersion } from "./lib/wrk.ts";

const HELP = `Usage: deno task bench [options]           (the plaintext scenario)
       deno task bench:static [options]    (the same as: deno task bench --scenario static)

Side-by-side HTTP benchmark on 127.0.0.1: each server in turn (never two at once) gets, for
each URL of the scenario, a 1 s wrk warm-up, a plain run and a pipelined run; the server's
CPU time is divided by the requests it served. Needs wrk (sudo apt-get install wrk).

Options:
  --scenario NAME   what every server serves (default plaintext):
                      plaintext  GET /plaintext: "Hello, World!"
                      static     a generated directory (ROOT in the servers' environment):
                                 GET /4k.bin (4 KiB), then GET /1m.bin (1 MiB), each
                                 checked byte for byte before it is loaded
                      websocket  runs bench/websocket.ts (deno serve and ours echoing
                                 64-byte messages; not wrk): the same as
                                 deno task bench:websocket, with its own options
  --duration S      seconds per wrk run (default 5)
  --connections N   wrk connections, one client thread (default 50)
  --depth D         requests per write in the pipelined run (default 16)
  --servers LIST    comma-separated subset of the scenario's servers (default: all):
                      plaintext: ours, deno-serve, deno-listen, node-http, c
                                 (node-http needs node, c needs cc and the shared C source)
                      static:    ours, nginx-static (needs nginx: apt-get install nginx-core)
  --out DIR         where to write the results (default bench/results):
                      plaintext: http-<time>.json, http-latest.json, http-latest.svg
                      static:    http-static-<time>.json, http-static-latest.json and .svg
  --rounds N        run every server N times, alternating, and report each server's
                    median run (default 1; 3 or 5 on a noisy machine)
  --ours-cmd CMD    shell command for "ours"; it must serve HTTP/1.1 on 127.0.0.1:$PORT
                    (plaintext default: deno run --allow-all main.ts serve --app http
                    --port $PORT; static: deno run --allow-all main.ts serve --root "$ROOT"
                    --port $PORT)
  -h, --help        show this help

Lower CPU µs/request is better. rps is capped by the single wrk thread on small machines,
so compare CPU per request, and only between servers of the same run. See docs/bench.md.`;

/** The servers of each scenario, in run order. */
const SCENARIOS = {
  plaintext: ["ours", "deno-serve", "deno-listen", "node-http", "c"],
  static: ["ours", "nginx-static"],
} as const;
type Scenario = keyof typeof SCENARIOS;
type ServerName = typeof SCENARIOS[Scenario][number];

/** The files of the static scenario; their bytes come from {@link patternBytes}. */
const STATIC_FILES = [
  { key: "4k", label: "4 KiB", name: "4k.bin", size: 4096 },
  { key: "1m", label: "1 MiB", name: "1m.bin", size: 1024 * 1024 },
] as const;

/** A URL every server of the scenario is loaded with, and how to check its answer first. */
interface Target {
  /** Key of its figures in the results: "plaintext", or a file's key ("4k", "1m"). */
  key: string;
  /** Name in the table and the chart, e.g. "4 KiB". */
  label: string;
  /** Path of the plain run's URL. */
  path: string;
  /** Path of every request of the pipelined run (pipeline.lua's URLPATH). */
  pipelinePath: string;
  /** Throws, saying what was wrong, unless the server on `port` answers as it should. */
  check(port: number): Promise<void>;
}

interface Options {
  scenario: Scenario;
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
  /** Bytes wrk read from the server (headers and bodies). */
  bytesRead: number;
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

/** The plain and the pipelined run of one target. */
interface TargetRuns {
  plain: RunFigures | null;
  pipelined: RunFigures | null;
}

interface ServerResult {
  name: ServerName;
  cmd: string | null;
  status: "ok" | "skipped" | "failed";
  note: string | null;
  port: number | null;
  /** The runs of each target, by its key. */
  runs: Record<string, TargetRuns>;
  rssBytes: number | null;
  rssMiB: number | null;
  /** Summed VmHWM (peak RSS) of the server's processes at the end. */
  peakRssMiB: number | null;
  processes: number | null;
  logPath: string | null;
}

interface Ratio {
  peer: ServerName;
  /** The target's key (static: the file), absent in the plaintext scenario. */
  file?: string;
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
        scenario: { type: "string" },
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
  const scenario = (v.scenario ?? "plaintext") as Scenario;
  if (!Object.hasOwn(SCENARIOS, scenario)) {
    fail(`unknown scenario '${v.scenario}': choose from ${Object.keys(SCENARIOS).join(", ")}`);
  }
  const all: readonly ServerName[] = SCENARIOS[scenario];
  let servers: ServerName[] = [...all];
  if (v.servers !== undefined) {
    const wanted = v.servers.split(",").map((s) => s.trim()).filter(Boolean);
    const unknown = wanted.filter((s) => !(all as readonly string[]).includes(s));
    if (unknown.length || wanted.length === 0) {
      fail(
        `unknown server '${unknown.join(",")}' for the ${scenario} scenario: ` +
          `choose from ${all.join(", ")}`,
      );
    }
    servers = all.filter((s) => wanted.includes(s)); // run order stays fixed
  }
  return {
    scenario,
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

/** First line a command prints on stdout, or else on stderr (`nginx -v`); null if it fails. */
async function commandOutput(cmd: string, args: string[]): Promise<string | null> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    if (!out.success) return null;
    const dec = new TextDecoder();
    const text = dec.decode(out.stdout).trim() || dec.decode(out.stderr).trim();
    return text.split("\n")[0] || null;
  } catch {
    return null;
  }
}

/** nginx from PATH, or from the sbin directories a user's PATH often lacks. */
function findNginx(): string | null {
  return which("nginx") ??
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"]
      .map(which).find((p) => p !== null) ??
    null;
}

/** The bytes of a static test file: a repeating pattern whose period (251) is no power of 2. */
function patternBytes(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = i % 251;
  return bytes;
}

/** Writes the static scenario's files into `root`. */
async function writeStaticTree(root: string): Promise<void> {
  for (const f of STATIC_FILES) await Deno.writeFile(`${root}/${f.name}`, patternBytes(f.size));
}

/** What the servers of the scenario are loaded with. */
function targets(scenario: Scenario): Target[] {
  if (scenario === "plaintext") {
    return [{
      key: "plaintext",
      label: "plaintext",
      path: "/", // as in the runs before the static scenario came: their figures stay comparable
      pipelinePath: "/plaintext",
      async check(port) {
        const res = await httpGet(port, "/plaintext");
        if (res.status !== 200 || !res.body.includes("Hello, World!")) {
          throw new Error(
            `GET /plaintext answered ${res.status || "nothing"} ${
              JSON.stringify(res.body.slice(0, 60))
            }, not 200 "Hello, World!"`,
          );
        }
      },
    }];
  }
  return STATIC_FILES.map((f) => ({
    key: f.key,
    label: f.label,
    path: `/${f.name}`,
    pipelinePath: `/${f.name}`,
    async check(port) {
      const res = await httpGetBytes(port, `/${f.name}`, 10_000);
      const want = patternBytes(f.size);
      const same = res.body.length === want.length && res.body.every((b, i) => b === want[i]);
      if (res.status !== 200 || !same) {
        throw new Error(
          `GET /${f.name} answered ${res.status || "nothing"} with ${res.body.length} bytes` +
            `${res.body.length === want.length ? " that differ from the file" : ""}, ` +
            `not 200 with the file's ${f.size} bytes`,
        );
      }
    },
  }));
}

/** A server to run, or the reason it cannot run on this machine. */
type Plan =
  | { name: ServerName; cmd: string; env?: Record<string, string> }
  | { name: ServerName; skip: string };

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
          const what = opts.scenario === "static" ? `--root "$ROOT"` : "--app http";
          plans.push({ name, cmd: `${deno} run --allow-all main.ts serve ${what} --port $PORT` });
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
        const bin = `${tmp}/c_epoll_server`;
        const why = await buildC(src, bin);
        if (why === null) plans.push({ name, cmd: `${shellQuote(bin)} http $PORT` });
        else plans.push({ name, skip: `optional C anchor: ${why}` });
        break;
      }
      case "nginx-static": {
        const nginx = findNginx();
        if (!nginx) {
          plans.push({
            name,
            skip: "nginx is missing: install it with 'apt-get install nginx-core'",
          });
        } else {
          // The anchor's config and pid file go into a directory under TMPDIR: beside the logs.
          plans.push({
            name,
            cmd: `bash ${shellQuote(resolve(benchDir, "anchors", "nginx_static.sh"))}`,
            env: { NGINX_BIN: nginx, TMPDIR: tmp },
          });
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
    bytesRead: wrk.bytesRead,
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

/** What went wrong around one run (wrk errors, a busy machine), for the notes under the table. */
function runNotes(label: string, f: RunFigures): string[] {
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
}

/** Starts one server, checks and loads each target, and always stops its whole session. */
async function benchOne(
  p: { name: ServerName; cmd: string; env?: Record<string, string> },
  opts: Options,
  ctx: {
    logDir: string;
    usedPorts: Set<number>;
    hz: number;
    signal: AbortSignal;
    targets: Target[];
    env: Record<string, string>;
  },
): Promise<ServerResult> {
  const result = emptyResult(p.name, p.cmd, "failed", null);
  const port = freePort(ctx.usedPorts);
  ctx.usedPorts.add(port);
  result.port = port;
  log(`${p.name}: starting on 127.0.0.1:${port}: ${p.cmd}`);
  let server: ServerHandle | null = null;
  const notes: string[] = [];
  try {
    server = await startServer({
      name: p.name,
      cmd: p.cmd,
      port,
      cwd: repoDir,
      logDir: ctx.logDir,
      env: { ...ctx.env, ...p.env },
    });
    result.logPath = server.logPath;
    // Every answer is checked before any load, so a broken one costs no run.
    for (const t of ctx.targets) await t.check(port);

    let after: Mark | null = null;
    for (const t of ctx.targets) {
      const of = ctx.targets.length > 1 ? ` ${t.path}` : "";
      const base = {
        url: `http://127.0.0.1:${port}${t.path}`,
        connections: opts.connections,
        signal: ctx.signal,
      };
      log(`${p.name}:${of} warm-up ${WARMUP_S} s`);
      await runWrk({ ...base, seconds: WARMUP_S });

      log(`${p.name}:${of} plain ${opts.duration} s`);
      let before = mark(server);
      const plain = await runWrk({ ...base, seconds: opts.duration });
      after = mark(server);
      const runs: TargetRuns = { plain: figures(plain, before, after, ctx.hz), pipelined: null };
      result.runs[t.key] = runs;

      log(`${p.name}:${of} pipelined x${opts.depth} ${opts.duration} s`);
      before = mark(server);
      const piped = await runWrk({
        ...base,
        seconds: opts.duration,
        script: resolve(benchDir, "pipeline.lua"),
        env: { DEPTH: String(opts.depth), URLPATH: t.pipelinePath },
      });
      after = mark(server);
      runs.pipelined = figures(piped, before, after, ctx.hz);
      const where = ctx.targets.length > 1 ? `${t.label} ` : "";
      notes.push(
        ...runNotes(`${where}plain`, runs.plain!),
        ...runNotes(`${where}pipelined`, runs.pipelined),
      );
    }

    const end = after!.server;
    result.rssBytes = end.rssBytes;
    result.rssMiB = end.rssBytes / MiB;
    result.peakRssMiB = end.hwmBytes / MiB;
    result.processes = end.pids.length;
    if (end.pids.length === 0) throw new Error("the server died during the run");
    result.status = "ok";
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

/** ours' CPU per request over each peer's, per target. */
function ratios(results: ServerResult[], ts: Target[], scenario: Scenario): Ratio[] {
  const ours = results.find((r) => r.name === "ours" && r.status === "ok");
  if (!ours) return [];
  const div = (a: number | null | undefined, b: number | null | undefined) =>
    a != null && b != null && b > 0 ? a / b : null;
  return results.filter((r) => r.name !== "ours" && r.status === "ok").flatMap((r) =>
    ts.map((t) => ({
      peer: r.name,
      ...(scenario === "static" ? { file: t.key } : {}),
      plain: div(ours.runs[t.key]?.plain?.cpuUsPerReq, r.runs[t.key]?.plain?.cpuUsPerReq),
      pipelined: div(
        ours.runs[t.key]?.pipelined?.cpuUsPerReq,
        r.runs[t.key]?.pipelined?.cpuUsPerReq,
      ),
    }))
  );
}

function kilo(rps: number): string {
  if (rps >= 1e6) return `${(rps / 1e6).toFixed(2)}M`;
  if (rps >= 1e3) return `${(rps / 1e3).toFixed(rps >= 1e5 ? 0 : 1)}k`;
  return rps.toFixed(0);
}

/** One bar chart per target (stacked when there are several: each keeps its own scale). */
function chart(
  results: ServerResult[],
  ts: Target[],
  opts: Options,
  machine: MachineInfo,
  when: Date,
): string {
  const ok = results.filter((r) => r.status === "ok");
  const charts = ts.map((t, i) =>
    barChartSvg({
      title: opts.scenario === "static"
        ? `GET of a ${t.label} file: server CPU time per request (lower is better)`
        : "Server CPU time per request (lower is better)",
      subtitle:
        `wrk -t1 -c${opts.connections} -d${opts.duration}s ${t.path}, pipelined depth ${opts.depth} · ` +
        `${machine.cpuModel}, ${machine.nproc} CPUs, Linux ${machine.kernel} · Deno ${machine.deno} · ` +
        when.toISOString().slice(0, 16).replace("T", " ") + " UTC",
      yLabel: "CPU µs per request",
      series: [{ name: "plain" }, { name: `pipelined ×${opts.depth}` }],
      groups: ok.map((r) => {
        const runs = r.runs[t.key];
        return {
          label: r.name,
          sublabel: `${kilo(runs?.plain?.rps ?? 0)} | ${kilo(runs?.pipelined?.rps ?? 0)} req/s`,
          values: [runs?.plain?.cpuUsPerReq ?? null, runs?.pipelined?.cpuUsPerReq ?? null],
          highlight: r.name === "ours",
        };
      }),
      footnote: i < ts.length - 1 ? undefined : "CPU = user + system time of all the server's " +
        "processes during the wrk run, divided by the requests served. Compare servers of the " +
        "same run only.\nUnder each name: requests/s plain | pipelined (capped by the single " +
        "wrk thread).",
    })
  );
  return charts.length === 1 ? charts[0] : stackSvgs(charts);
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
    runs: {},
    rssBytes: null,
    rssMiB: null,
    peakRssMiB: null,
    processes: null,
    logPath: null,
  };
}

/** The median of a server's rounds: each target's plain and pipelined picked by CPU/request. */
function medianResult(runs: ServerResult[]): ServerResult {
  const ok = runs.filter((r) => r.status === "ok");
  if (ok.length === 0) return runs[runs.length - 1];
  const pick = (key: string, k: keyof TargetRuns) => {
    const sorted = ok.map((r) => r.runs[key]?.[k] ?? null).filter((f): f is RunFigures =>
      f !== null
    ).sort((a, b) => (a.cpuUsPerReq ?? Infinity) - (b.cpuUsPerReq ?? Infinity));
    return sorted.length ? sorted[(sorted.length - 1) >> 1] : null;
  };
  const median: Record<string, TargetRuns> = {};
  for (const key of Object.keys(ok[0].runs)) {
    median[key] = { plain: pick(key, "plain"), pipelined: pick(key, "pipelined") };
  }
  return { ...ok[0], runs: median };
}

/**
 * A result as the report files hold it: the plaintext scenario keeps its flat `plain` and
 * `pipelined` (the file format older runs have), the static scenario names its runs `files`.
 */
function reportShape(r: ServerResult, scenario: Scenario): Record<string, unknown> {
  const { runs, ...rest } = r;
  if (scenario === "static") return { ...rest, files: runs };
  const only = runs.plaintext;
  return { ...rest, plain: only?.plain ?? null, pipelined: only?.pipelined ?? null };
}

/** `--scenario websocket`: bench/websocket.ts with the other arguments (its load is not wrk). */
async function websocketScenario(args: string[]): Promise<number | null> {
  const at = args.findIndex((a) => a === "--scenario=websocket" || a === "--scenario");
  if (at < 0) return null;
  const inline = args[at] === "--scenario=websocket";
  if (!inline && args[at + 1] !== "websocket") return null;
  const rest = args.filter((_, i) => i !== at && (inline || i !== at + 1));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", resolve(benchDir, "websocket.ts"), ...rest],
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  return (await child.status).code;
}

async function main(): Promise<number> {
  const ws = await websocketScenario(Deno.args);
  if (ws !== null) return ws;
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
  const ts = targets(opts.scenario);
  const isStatic = opts.scenario === "static";
  const nginx = isStatic ? findNginx() : null;
  const tools = {
    wrk: await wrkVersion(wrk),
    node: which("node") ? await commandOutput("node", ["--version"]) : null,
    cc: which("cc") ? await commandOutput("cc", ["--version"]) : null,
    ...(isStatic ? { nginx: nginx ? await commandOutput(nginx, ["-v"]) : null } : {}),
  };
  // The static scenario's directory: every server gets it as ROOT.
  const root = isStatic ? await Deno.makeTempDir({ prefix: "reactor-bench-static-" }) : null;
  if (root) await writeStaticTree(root);
  log(
    `bench: ${machine.cpuModel}, ${machine.nproc} CPUs, Linux ${machine.kernel}, ` +
      `Deno ${machine.deno}, load ${machine.loadavg.map((l) => l.toFixed(2)).join(" ")}`,
  );
  log(
    `bench: ${opts.scenario} scenario${root ? ` (ROOT=${root})` : ""}, wrk -t1 ` +
      `-c${opts.connections} -d${opts.duration}s, pipelined depth ${opts.depth}; logs in ${logDir}`,
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
        const r = await benchOne(p, opts, {
          logDir,
          usedPorts,
          hz,
          signal: abort.signal,
          targets: ts,
          env: root ? { ROOT: root } : {},
        });
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
    if (root) await Deno.remove(root, { recursive: true });
  }
  for (const runs of rounds.values()) results.push(medianResult(runs));

  if (interrupted) return 130;

  // Table: one row per server (plaintext), or per server and file (static).
  const d = opts.depth;
  const rows = results.flatMap((r) =>
    r.status === "ok"
      ? ts.map((t) => [
        r.name,
        ...(isStatic ? [t.label] : []),
        num(r.runs[t.key]?.plain?.rps),
        num(r.runs[t.key]?.plain?.cpuUsPerReq, 2),
        num(r.runs[t.key]?.pipelined?.rps),
        num(r.runs[t.key]?.pipelined?.cpuUsPerReq, 2),
        num(r.rssMiB, 1),
      ])
      : [[r.name, ...(isStatic ? [""] : []), r.status, "", "", "", ""]]
  );
  console.log();
  console.log(
    formatTable(
      [
        "server",
        ...(isStatic ? ["file"] : []),
        "rps",
        "cpu µs/req",
        `rps (pipelined ${d})`,
        "cpu µs/req (pipelined)",
        "RSS MiB",
      ],
      rows,
    ),
  );
  for (const r of results) if (r.note) console.log(`  ${r.name}: ${r.note.split("\n")[0]}`);
  if (opts.rounds > 1) {
    console.log(`  (each server's median of ${opts.rounds} rounds; every round's cpu µs/req:)`);
    for (const [name, runs] of rounds) {
      if (runs[0].status === "skipped") continue;
      for (const t of ts) {
        const each = (k: keyof TargetRuns) =>
          runs.map((r) => num(r.runs[t.key]?.[k]?.cpuUsPerReq, 2)).join(" ");
        const what = isStatic ? `${name} ${t.label}` : name;
        console.log(`  ${what}: plain ${each("plain")}; pipelined ${each("pipelined")}`);
      }
    }
  }

  const rs = ratios(results, ts, opts.scenario);
  console.log();
  if (rs.length) {
    console.log("CPU per request, ours vs each peer (< 1 means ours uses less CPU):");
    const label = (x: Ratio) =>
      `ours vs ${x.peer}${x.file ? `, ${ts.find((t) => t.key === x.file)?.label}` : ""}`;
    console.log(
      formatTable(
        ["", "plain", `pipelined ${d}`],
        rs.map((x) => [
          label(x),
          x.plain === null ? "-" : `${x.plain.toFixed(2)}x`,
          x.pipelined === null ? "-" : `${x.pipelined.toFixed(2)}x`,
        ]),
      ),
    );
  } else {
    console.log("No ratios: 'ours' did not run, or no peer did.");
  }

  // Files: the static scenario's have their own names, so neither overwrites the other.
  const base = isStatic ? "http-static" : "http";
  const stamp = when.toISOString().replace(/\.\d+Z$/, "Z").replaceAll(":", "-");
  const report = {
    benchmark: isStatic ? "http-static" : "http-plaintext",
    timestamp: when.toISOString(),
    machine,
    tools,
    parameters: {
      scenario: opts.scenario,
      ...(isStatic
        ? { files: STATIC_FILES.map((f) => ({ key: f.key, path: `/${f.name}`, bytes: f.size })) }
        : {}),
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
    servers: results.map((r) => reportShape(r, opts.scenario)),
    rounds: Object.fromEntries(
      [...rounds].map(([name, runs]) => [name, runs.map((r) => reportShape(r, opts.scenario))]),
    ),
    ratios: rs,
  };
  await Deno.mkdir(opts.out, { recursive: true });
  const json = JSON.stringify(report, null, 2) + "\n";
  const jsonPath = resolve(opts.out, `${base}-${stamp}.json`);
  await Deno.writeTextFile(jsonPath, json);
  await Deno.writeTextFile(resolve(opts.out, `${base}-latest.json`), json);
  const svgPath = resolve(opts.out, `${base}-latest.svg`);
  await Deno.writeTextFile(svgPath, chart(results, ts, opts, machine, when));
  const show = (p: string) =>
    relative(Deno.cwd(), p).startsWith("..") ? p : relative(Deno.cwd(), p);
  console.log();
  console.log(
    `wrote ${show(jsonPath)}, ${base}-latest.json, ${base}-latest.svg; server logs in ${logDir}`,
  );

  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  return results.some((r) => r.status === "failed") ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
