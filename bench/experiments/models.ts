/**
 * Experiment "models": the readiness model (epoll) against the completion model (io_uring), in
 * C and in this reactor, measured as syscalls and server CPU per request.
 *
 *   deno run -A bench/experiments/models.ts [--connections 50,5000] [--window-seconds 3]
 *                                           [--warmup 1] [--depth 16] [--size 64]
 *                                           [--servers c-epoll,c-uring,reactor-epoll,reactor-uring]
 *
 * Servers: the C references `../shared/bench/c_epoll_server.c` and `c_uring_server.c` (built
 * with `cc -O2`, the latter with `-luring`) and `main.ts serve` on `--backend epoll` and
 * `--backend io_uring`. Scenarios, each at every `--connections` count:
 *
 * - `http`: `GET /` "Hello, World!" with wrk (1 thread), one request in flight per connection;
 * - `http-pipe`: the same with `--depth` requests per write (`bench/pipeline.lua`);
 * - `echo`: `--size`-byte ping-pong round trips from the raw-socket client of `clients.ts`.
 *
 * For each app all servers run at once (idle ones cost nothing), and each scenario measures the
 * servers one after the other, so that a server's figures and C epoll's come from the same
 * minute. Per cell: a warm-up, then a CPU window (utime + stime of every server thread from
 * /proc) and then a separate syscall window under `perf stat -e raw_syscalls:sys_enter -p PID`
 * (a few `syscalls:sys_enter_*` tracepoints beside it for the breakdown). The windows are
 * separate because the tracepoints cost CPU per syscall, which would charge the model that
 * makes more syscalls. Requests are wrk's count (HTTP) or the echo client's count over the
 * window. Writes docs/experiments/models.json and .svg.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { numberFlag, numberListFlag, orExit } from "../lib/flags.ts";
import { buildC, exists, which } from "../lib/machine.ts";
import { groupStats, parsePerfStat, systemCpu, ticksToSeconds } from "../lib/proc.ts";
import { type ServerHandle, shellQuote, startServer, stopServer } from "../lib/server.ts";
import { barChartSvg, stackSvgs } from "../lib/svg.ts";
import { formatTable, num } from "../lib/table.ts";
import { errorCount, runWrk, type WrkResult } from "../lib/wrk.ts";
import { probeIoUring } from "../../syscalls/io_uring.ts";
import {
  cleanupAll,
  cleanupOnSignal,
  type ClientProc,
  header,
  machineLine,
  progress,
  ROOT,
  sleep,
  startLoad,
  writeResults,
} from "./common.ts";

const TOOL = "models";
const ALL_SERVERS = ["c-epoll", "c-uring", "reactor-epoll", "reactor-uring"] as const;
type ServerName = typeof ALL_SERVERS[number];
type Scenario = "http" | "http-pipe" | "echo";
const SCENARIOS: Scenario[] = ["http", "http-pipe", "echo"];

const { values: v } = orExit(TOOL, () =>
  parseArgs({
    args: Deno.args,
    options: {
      connections: { type: "string", default: "50,5000" },
      "window-seconds": { type: "string", default: "3" },
      warmup: { type: "string", default: "1" },
      depth: { type: "string", default: "16" },
      size: { type: "string", default: "64" },
      servers: { type: "string", default: ALL_SERVERS.join(",") },
    },
    strict: true,
  }));
const connectionCounts = numberListFlag(TOOL, "connections", v.connections!, {
  min: 1,
  integer: true,
});
const windowSeconds = numberFlag(TOOL, "window-seconds", v["window-seconds"]!, { min: 1 });
const warmup = numberFlag(TOOL, "warmup", v.warmup!, { min: 0 });
const depth = numberFlag(TOOL, "depth", v.depth!, { min: 2, integer: true });
const size = numberFlag(TOOL, "size", v.size!, { min: 1, integer: true });
const wanted = orExit(TOOL, () => {
  const names = v.servers!.split(",").map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    if (!(ALL_SERVERS as readonly string[]).includes(n)) {
      throw new Error(`--servers: unknown server '${n}' (known: ${ALL_SERVERS.join(", ")})`);
    }
  }
  return names as ServerName[];
});

const SHARED = resolve(ROOT, "../shared/bench");
const PIPELINE_LUA = resolve(ROOT, "bench/pipeline.lua");
const TRACING = "/sys/kernel/tracing/events";
/** Syscalls broken out beside the total (those without a tracepoint here are left out). */
const BREAKDOWN = [
  "epoll_wait",
  "epoll_pwait",
  "epoll_pwait2",
  "io_uring_enter",
  "epoll_ctl",
  "read",
  "write",
  "recvfrom",
  "sendto",
  "writev",
  "accept4",
  "close",
  "setsockopt",
  "futex",
].filter((s) => exists(`${TRACING}/syscalls/sys_enter_${s}`));

// ---------------------------------------------------------------------------------------
// Servers

/** How to start one server for an app; null with the reason when it cannot run here. */
async function serverCommand(
  name: ServerName,
  app: "http" | "echo",
  binDir: string,
): Promise<{ cmd: string } | { skip: string }> {
  const deno = shellQuote(Deno.execPath());
  const c = async (src: string, bin: string, libs: string[]) => {
    const path = `${binDir}/${bin}`;
    if (!exists(path)) {
      const why = await buildC(`${SHARED}/${src}`, path, libs);
      if (why !== null) return { skip: why };
    }
    return { cmd: `${shellQuote(path)} ${app} $PORT` };
  };
  switch (name) {
    case "c-epoll":
      return await c("c_epoll_server.c", "c_epoll_server", []);
    case "c-uring":
      return await c("c_uring_server.c", "c_uring_server", ["-luring"]);
    case "reactor-epoll":
      return { cmd: `${deno} run -A main.ts serve --app ${app} --port $PORT --backend epoll` };
    case "reactor-uring": {
      const probe = probeIoUring();
      if (!probe.ok) return { skip: `io_uring: ${probe.reason}` };
      return { cmd: `${deno} run -A main.ts serve --app ${app} --port $PORT --backend io_uring` };
    }
  }
}

// ---------------------------------------------------------------------------------------
// Measuring

/** CPU ticks of a server's processes at one instant, split into user and total. */
function cpuNow(h: ServerHandle): { total: number; user: number } {
  let total = 0;
  let user = 0;
  for (const s of groupStats(h.pid)) {
    total += s.utime + s.stime + s.cutime + s.cstime;
    user += s.utime + s.cutime;
  }
  return { total, user };
}

/** `perf stat` attached to a process: started, then stopped with SIGINT and parsed. */
class PerfStat {
  readonly #child: Deno.ChildProcess;
  readonly #file: string;

  private constructor(child: Deno.ChildProcess, file: string) {
    this.#child = child;
    this.#file = file;
  }

  /** Attaches to `pid` (all its threads); resolves once perf has had time to attach. */
  static async attach(pid: number, dir: string): Promise<PerfStat> {
    const file = `${dir}/perf-${pid}-${Date.now()}.csv`;
    const events = ["raw_syscalls:sys_enter", ...BREAKDOWN.map((s) => `syscalls:sys_enter_${s}`)];
    const child = new Deno.Command("perf", {
      args: ["stat", "-x", ";", "-o", file, ...events.flatMap((e) => ["-e", e]), "-p", String(pid)],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // perf writes nothing until it stops, so give it time to attach and check it is still there.
    let exited = false;
    child.status.then(() => exited = true);
    await sleep(300);
    if (exited) {
      const err = await new Response(child.stderr).text().catch(() => "");
      throw new Error(`perf stat exited at once: ${err.trim().slice(0, 300)}`);
    }
    return new PerfStat(child, file);
  }

  /** Stops counting; returns the total and the breakdown by syscall name. */
  async stop(): Promise<{ total: number; bySyscall: Record<string, number> }> {
    this.#child.kill("SIGINT");
    const err = await new Response(this.#child.stderr).text().catch(() => "");
    await this.#child.status;
    const text = Deno.readTextFileSync(this.#file);
    const counts = parsePerfStat(text);
    const total = counts["raw_syscalls:sys_enter"] ?? NaN;
    const bySyscall: Record<string, number> = {};
    for (const [event, count] of Object.entries(counts)) {
      if (event.startsWith("syscalls:sys_enter_")) {
        bySyscall[event.slice("syscalls:sys_enter_".length)] = count;
      }
    }
    if (!Number.isFinite(total)) {
      throw new Error(
        `perf stat counted nothing: ${text.trim().slice(0, 200)} ${err.slice(0, 200)}`,
      );
    }
    return { total, bySyscall };
  }
}

/** Figures of one CPU window. */
interface CpuWindow {
  seconds: number;
  requests: number;
  rps: number;
  cpuUsPerRequest: number;
  userUsPerRequest: number;
  sysUsPerRequest: number;
  serverCores: number;
  machineBusyCores: number;
  wrkErrors: number | null;
}

/** Figures of one syscall window. */
interface SyscallWindow {
  requests: number;
  syscalls: number;
  perRequest: number;
  /** Per request, by syscall name (those that occurred). */
  perRequestBySyscall: Record<string, number>;
  wrkErrors: number | null;
}

/** One server in one scenario at one connection count. */
interface Cell {
  server: ServerName;
  scenario: Scenario;
  connections: number;
  cpu: CpuWindow | null;
  syscalls: SyscallWindow | null;
  error: string | null;
}

/** Drives one load for a window; returns the requests completed in it. */
type Load = (seconds: number) => Promise<{ requests: number; wrkErrors: number | null }>;

function wrkLoad(port: number, scenario: Scenario, connections: number): Load {
  return async (seconds) => {
    const r: WrkResult = await runWrk({
      url: `http://127.0.0.1:${port}/`,
      connections,
      threads: 1,
      seconds,
      script: scenario === "http-pipe" ? PIPELINE_LUA : undefined,
      env: { DEPTH: String(depth), URLPATH: "/" },
    });
    return { requests: r.requests, wrkErrors: errorCount(r.errors) };
  };
}

function echoLoad(client: ClientProc): Load {
  return async (seconds) => {
    const a = await client.ask("snapshot");
    await sleep(seconds * 1000);
    const b = await client.ask("snapshot");
    return { requests: (b.requests as number) - (a.requests as number), wrkErrors: null };
  };
}

async function cpuWindow(h: ServerHandle, load: Load): Promise<CpuWindow> {
  const sys0 = systemCpu();
  const c0 = cpuNow(h);
  const t0 = performance.now();
  const { requests, wrkErrors } = await load(windowSeconds);
  const c1 = cpuNow(h);
  const seconds = (performance.now() - t0) / 1000;
  const sys1 = systemCpu();
  const cpuS = ticksToSeconds(c1.total - c0.total);
  const userS = ticksToSeconds(c1.user - c0.user);
  const per = (s: number) => requests > 0 ? s * 1e6 / requests : NaN;
  const sysTotal = sys1.total - sys0.total;
  return {
    seconds,
    requests,
    rps: requests / seconds,
    cpuUsPerRequest: per(cpuS),
    userUsPerRequest: per(userS),
    sysUsPerRequest: per(cpuS - userS),
    serverCores: cpuS / seconds,
    machineBusyCores: sysTotal > 0
      ? (sys1.busy - sys0.busy) / sysTotal * navigator.hardwareConcurrency
      : 0,
    wrkErrors,
  };
}

async function syscallWindow(h: ServerHandle, load: Load, dir: string): Promise<SyscallWindow> {
  const perf = await PerfStat.attach(h.pid, dir);
  let counts;
  let result;
  try {
    result = await load(windowSeconds);
  } finally {
    counts = await perf.stop();
  }
  const perRequestBySyscall: Record<string, number> = {};
  for (const [k, n] of Object.entries(counts.bySyscall)) {
    if (n > 0 && result.requests > 0) perRequestBySyscall[k] = n / result.requests;
  }
  return {
    requests: result.requests,
    syscalls: counts.total,
    perRequest: result.requests > 0 ? counts.total / result.requests : NaN,
    perRequestBySyscall,
    wrkErrors: result.wrkErrors,
  };
}

async function measureCell(
  server: ServerName,
  h: ServerHandle,
  scenario: Scenario,
  connections: number,
  dir: string,
  usePerf: boolean,
): Promise<Cell> {
  const cell: Cell = { server, scenario, connections, cpu: null, syscalls: null, error: null };
  let client: ClientProc | null = null;
  try {
    let load: Load;
    if (scenario === "echo") {
      client = (await startLoad(h.port, connections, size)).proc;
      load = echoLoad(client);
      await sleep(warmup * 1000);
    } else {
      load = wrkLoad(h.port, scenario, connections);
      if (warmup > 0) await wrkLoad(h.port, scenario, connections)(warmup);
    }
    cell.cpu = await cpuWindow(h, load);
    if (usePerf) cell.syscalls = await syscallWindow(h, load, dir);
  } catch (e) {
    cell.error = (e as Error).message.split("\n")[0];
  } finally {
    await client?.stop();
  }
  return cell;
}

// ---------------------------------------------------------------------------------------
// The run

cleanupOnSignal();
const head = header(
  TOOL,
  "Syscalls and server CPU per request of the readiness model (epoll) and the completion " +
    "model (io_uring), in plain C and in this reactor: HTTP plain and pipelined, echo.",
);
const workDir = await Deno.makeTempDir({ prefix: "models-" });
const usePerf = which("perf") !== null && exists(`${TRACING}/raw_syscalls/sys_enter`);
if (!usePerf) {
  progress(
    `no perf or no ${TRACING}/raw_syscalls (mount -t tracefs nodev /sys/kernel/tracing): ` +
      `syscall counts are skipped`,
  );
}
const skipped: Record<string, string> = {};
const cells: Cell[] = [];
const t0 = Date.now();
try {
  for (const app of ["http", "echo"] as const) {
    const handles = new Map<ServerName, ServerHandle>();
    for (const name of wanted) {
      const how = await serverCommand(name, app, workDir);
      if ("skip" in how) {
        skipped[name] = how.skip;
        progress(`${name}: skipped (${how.skip})`);
        continue;
      }
      try {
        handles.set(
          name,
          await startServer({ name: `${name}-${app}`, cmd: how.cmd, cwd: ROOT, logDir: workDir }),
        );
      } catch (e) {
        skipped[name] = (e as Error).message.split("\n")[0];
        progress(`${name} (${app}): did not start: ${skipped[name]}`);
      }
    }
    try {
      for (const scenario of SCENARIOS.filter((s) => (s === "echo") === (app === "echo"))) {
        for (const connections of connectionCounts) {
          for (const [name, h] of handles) {
            const c = await measureCell(name, h, scenario, connections, workDir, usePerf);
            cells.push(c);
            progress(
              `${scenario} c=${connections} ${name}: ` +
                (c.error
                  ? `error: ${c.error}`
                  : `${num(c.cpu?.rps)} req/s, ${num(c.cpu?.cpuUsPerRequest, 2)} µs/req, ${
                    num(c.syscalls?.perRequest, 3)
                  } syscalls/req`) +
                ` [${((Date.now() - t0) / 1000).toFixed(0)} s]`,
            );
          }
        }
      }
    } finally {
      for (const h of handles.values()) await stopServer(h);
    }
  }
} finally {
  await cleanupAll();
}

// ---------------------------------------------------------------------------------------
// Output

const scenarioLabel = (s: Scenario) =>
  s === "http" ? "HTTP plain" : s === "http-pipe" ? `HTTP ${depth}-deep` : `echo ${size} B`;
const baseline = (c: Cell) =>
  cells.find((b) =>
    b.server === "c-epoll" && b.scenario === c.scenario && b.connections === c.connections
  );
const ratio = (c: Cell) => {
  const b = baseline(c)?.cpu?.cpuUsPerRequest;
  return b && c.cpu ? c.cpu.cpuUsPerRequest / b : NaN;
};
const top = (c: Cell) =>
  Object.entries(c.syscalls?.perRequestBySyscall ?? {}).sort((a, b) => b[1] - a[1]).slice(0, 3)
    .map(([k, n]) => `${k} ${n.toFixed(n < 0.1 ? 3 : 2)}`).join(", ");

const table = formatTable(
  [
    "scenario",
    "conns",
    "server",
    "req/s",
    "CPU µs/req",
    "user",
    "sys",
    "x C epoll",
    "syscalls/req",
    "top syscalls per request",
    "machine",
  ],
  cells.map((c) => [
    scenarioLabel(c.scenario),
    String(c.connections),
    c.server,
    num(c.cpu?.rps),
    num(c.cpu?.cpuUsPerRequest, 2),
    num(c.cpu?.userUsPerRequest, 2),
    num(c.cpu?.sysUsPerRequest, 2),
    num(ratio(c), 2),
    num(c.syscalls?.perRequest, 3),
    c.error ? `error: ${c.error.slice(0, 60)}` : top(c),
    num(c.cpu?.machineBusyCores, 2),
  ]),
  ["left", "right", "left", "right", "right", "right", "right", "right", "right", "left", "right"],
);
console.log(table);
const errors = cells.filter((c) => (c.cpu?.wrkErrors ?? 0) + (c.syscalls?.wrkErrors ?? 0) > 0);
for (const c of errors) {
  console.log(
    `note: wrk counted socket errors for ${c.server} ${c.scenario} c=${c.connections}: ` +
      `${c.cpu?.wrkErrors ?? 0} (CPU window), ${c.syscalls?.wrkErrors ?? 0} (syscall window)`,
  );
}

const servers = wanted.filter((s) => cells.some((c) => c.server === s));
const groups = (f: (c: Cell) => number | null) =>
  SCENARIOS.flatMap((s) =>
    connectionCounts.map((n) => ({
      label: `${scenarioLabel(s)}, ${n}`,
      values: servers.map((name) => {
        const c = cells.find((x) => x.server === name && x.scenario === s && x.connections === n);
        const val = c ? f(c) : null;
        return val !== null && Number.isFinite(val) ? val : null;
      }),
    }))
  ).filter((g) => g.values.some((x) => x !== null));
const series = servers.map((name) => ({ name }));
const width = 1180;
const foot =
  `wrk -t1 (HTTP, GET /, ${depth}-deep with bench/pipeline.lua) or the clients.ts echo ` +
  `client (${size} B ping-pong); ${windowSeconds} s windows after ${warmup} s warm-up; ` +
  `label: scenario, connections\n${machineLine(head.machine)}`;
const svg = stackSvgs([
  barChartSvg({
    title: "Server CPU per request",
    subtitle: "utime + stime of every server thread (/proc) / requests; lower is better",
    yLabel: "CPU µs per request",
    series,
    groups: groups((c) => c.cpu?.cpuUsPerRequest ?? null),
    footnote: foot,
    width,
  }),
  barChartSvg({
    title: "Server CPU per request, relative to C epoll",
    subtitle: "same windows; 1.0 = C epoll in the same scenario",
    yLabel: "x C epoll",
    series,
    groups: groups((c) => ratio(c)),
    footnote: foot,
    width,
    format: (x) => x.toFixed(2),
  }),
  barChartSvg({
    title: "Syscalls per request",
    subtitle: "perf stat -e raw_syscalls:sys_enter -p PID, in a separate window of the same length",
    yLabel: "syscalls per request",
    series,
    groups: groups((c) => c.syscalls?.perRequest ?? null),
    footnote: foot,
    width,
    format: (x) => x.toFixed(x < 0.1 ? 3 : 2),
  }),
]);
const files = writeResults(TOOL, {
  ...head,
  params: {
    connections: connectionCounts,
    windowSeconds,
    warmup,
    depth,
    messageBytes: size,
    servers: wanted,
    syscallBreakdown: BREAKDOWN,
    perf: usePerf,
  },
  skipped,
  table,
  results: cells,
}, svg);
console.error(`wrote ${files.join(", ")} [${((Date.now() - t0) / 1000).toFixed(0)} s]`);
await Deno.remove(workDir, { recursive: true }).catch(() => {});
