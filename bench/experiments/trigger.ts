/**
 * Experiment "trigger": level-triggered vs edge-triggered epoll under the same loads.
 *
 *   deno run -A bench/experiments/trigger.ts [--loads small,bulk] [--syscall-seconds 3]
 *
 * Loads (echo ping-pong, one request in flight per connection):
 * - small: 50 connections, 64-byte messages: every message fits one recv.
 * - bulk: 8 connections, 256 KiB messages: four times the server's 64 KiB read buffer, so a
 *   message takes several recv calls.
 *
 * For each load and trigger mode: start our server (epoll, `--trigger level|edge`), warm up,
 * measure `--windows` windows with the reactor counters (wait calls, events delivered, server
 * CPU per request; median window), then count the server's syscalls per request over another
 * `--syscall-seconds` window: with `perf stat` on the kernel's syscall tracepoints when it
 * works here (cheap, counted in the kernel; `recvfrom` exits with ret == -EAGAIN counted by a
 * tracepoint filter; needs tracefs mounted at /sys/kernel/tracing), else with
 * `strace -c -f`, which slows the server several-fold and so changes how many events each
 * wait batches. Writes docs/experiments/trigger.json and trigger.svg.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { numberFlag, orExit } from "../lib/flags.ts";
import { which } from "../lib/machine.ts";
import { parsePerfStat } from "../lib/proc.ts";
import { barChartSvg } from "../lib/svg.ts";
import { formatTable, num } from "../lib/table.ts";
import {
  cleanupAll,
  cleanupOnSignal,
  grid,
  header,
  machineLine,
  measureWindow,
  type Probe,
  progress,
  sleep,
  startLoad,
  startOurs,
  stopOurs,
  WINDOW_OPTIONS,
  type WindowFigures,
  windowFlags,
  writeResults,
} from "./common.ts";

const LOADS: Record<string, { connections: number; size: number; what: string }> = {
  small: { connections: 50, size: 64, what: "50 conns x 64 B" },
  bulk: { connections: 8, size: 256 * 1024, what: "8 conns x 256 KiB" },
};

const { values: v } = orExit("trigger", () =>
  parseArgs({
    args: Deno.args,
    options: {
      loads: { type: "string", default: "small,bulk" },
      ...WINDOW_OPTIONS,
      "syscall-seconds": { type: "string", default: "3" },
      runs: { type: "string", default: "2" },
    },
    strict: true,
  }));
const loads = v.loads!.split(",");
for (const l of loads) if (!LOADS[l]) throw new Error(`unknown load ${l}: small or bulk`);
const { windows, windowSeconds, warmup } = windowFlags("trigger", v);
const syscallSeconds = numberFlag("trigger", "syscall-seconds", v["syscall-seconds"]!, {
  min: 0.1,
});
const runs = numberFlag("trigger", "runs", v.runs!, { min: 1, integer: true });
const strace = which("strace");
const perf = which("perf");
const usePerf = perfUsable();

/** One syscall line of `strace -c`. */
interface SyscallCount {
  calls: number;
  errors: number;
}

/** Parses the summary table of `strace -c`. */
export function parseStraceSummary(text: string): Record<string, SyscallCount> {
  const out: Record<string, SyscallCount> = {};
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || !/^[\d.]+$/.test(f[0]) || !/^\d+$/.test(f[3])) continue;
    const name = f[f.length - 1];
    if (name === "total") continue;
    out[name] = { calls: Number(f[3]), errors: f.length >= 6 ? Number(f[4]) : 0 };
  }
  return out;
}

/** Syscall counts per request over one window, from perf or strace. */
interface SyscallFigures {
  tool: "perf" | "strace";
  seconds: number;
  requests: number;
  /** Calls per request by syscall; `<name>:EAGAIN` entries count the calls that failed so. */
  perRequest: Record<string, number>;
  /** All syscalls of all threads per request. */
  totalPerRequest: number;
  raw: string;
}

const PERF_EVENTS = [
  "raw_syscalls:sys_enter",
  "syscalls:sys_enter_epoll_wait",
  "syscalls:sys_enter_epoll_ctl",
  "syscalls:sys_enter_recvfrom",
  "syscalls:sys_enter_sendto",
];
const PERF_EAGAIN = ["recvfrom", "sendto"];

/** perf with syscall tracepoints: counts in the kernel, costs the server little. */
function perfUsable(): boolean {
  if (!perf) return false;
  const out = new Deno.Command(perf, {
    args: ["stat", "-x", ";", "-e", "syscalls:sys_enter_epoll_wait", "--", "true"],
    stdout: "null",
    stderr: "piped",
  }).outputSync();
  return out.success;
}

function perfArgs(pid: number, out: string): string[] {
  const args = ["stat", "-x", ";", "-o", out, "-p", String(pid)];
  for (const e of PERF_EVENTS) args.push("-e", e);
  for (const name of PERF_EAGAIN) {
    args.push("-e", `syscalls:sys_exit_${name}`, "--filter", "ret == -11");
  }
  return args;
}

/** How many perf_event fds the process `pid` holds (to know perf has attached). */
function perfFds(pid: number): number {
  let n = 0;
  try {
    for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        if (Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`).includes("perf_event")) n++;
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // gone
  }
  return n;
}

async function syscallWindow(p: Probe, size: number): Promise<SyscallFigures | null> {
  const tool = usePerf ? "perf" : strace ? "strace" : null;
  if (!tool) return null;
  const out = await Deno.makeTempFile({ prefix: `${tool}-`, suffix: ".txt" });
  const log = await Deno.makeTempFile({ prefix: `${tool}-`, suffix: ".log" });
  const pid = p.handle.pid;
  const cmd = tool === "perf"
    ? [perf!, ...perfArgs(pid, out)]
    : [strace!, "-c", "-f", "-p", String(pid), "-o", out];
  const child = new Deno.Command("sh", {
    args: ["-c", `exec ${cmd.map((a) => `'${a}'`).join(" ")} 2>${log}`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  // Start the request bracket once the tool is attached to every thread.
  const threads = [...Deno.readDirSync(`/proc/${pid}/task`)].length;
  const wantFds = (PERF_EVENTS.length + PERF_EAGAIN.length) * threads;
  const attached = () =>
    tool === "perf" ? perfFds(child.pid) >= wantFds : /attached/.test(Deno.readTextFileSync(log));
  const deadline = Date.now() + 5000;
  while (!attached() && Date.now() < deadline) await sleep(2);
  const a = await p.snapshot();
  const t0 = performance.now();
  await sleep(syscallSeconds * 1000);
  const b = await p.snapshot();
  const seconds = (performance.now() - t0) / 1000;
  child.kill("SIGINT");
  await child.status;
  const raw = Deno.readTextFileSync(out);
  await Deno.remove(out);
  await Deno.remove(log);
  const requests = Math.round((b.counters.bytesIn - a.counters.bytesIn) / size);
  const perRequest: Record<string, number> = {};
  let total = 0;
  if (tool === "perf") {
    const c = parsePerfStat(raw);
    total = c["raw_syscalls:sys_enter"] ?? 0;
    for (const [event, n] of Object.entries(c)) {
      const enter = event.match(/^syscalls:sys_enter_(\w+)$/);
      const exit = event.match(/^syscalls:sys_exit_(\w+)$/);
      if (enter) perRequest[enter[1]] = n / requests;
      if (exit) perRequest[`${exit[1]}:EAGAIN`] = n / requests;
    }
  } else {
    for (const [name, c] of Object.entries(parseStraceSummary(raw))) {
      perRequest[name] = c.calls / requests;
      // strace -c counts every failure; for these calls on a healthy run they are EAGAIN.
      if (PERF_EAGAIN.includes(name)) perRequest[`${name}:EAGAIN`] = c.errors / requests;
      total += c.calls;
    }
  }
  return { tool, seconds, requests, perRequest, totalPerRequest: total / requests, raw };
}

interface Cell {
  run: number;
  load: string;
  trigger: "level" | "edge";
  connections: number;
  messageBytes: number;
  median: WindowFigures | null;
  windows: WindowFigures[];
  syscalls: SyscallFigures | null;
  exitCounters: Record<string, number> | null;
  error: string | null;
}

async function runCell(load: string, trigger: "level" | "edge", run: number): Promise<Cell> {
  const { connections, size } = LOADS[load];
  const cell: Cell = {
    run,
    load,
    trigger,
    connections,
    messageBytes: size,
    median: null,
    windows: [],
    syscalls: null,
    exitCounters: null,
    error: null,
  };
  const server = await startOurs(`trigger-${load}-${trigger}`, { trigger });
  let client = null;
  try {
    client = await startLoad(server.handle.port, connections, size);
    await sleep(warmup * 1000);
    for (let i = 0; i < windows; i++) {
      cell.windows.push(await measureWindow(server, client.proc, windowSeconds, size));
    }
    const sorted = [...cell.windows].sort((a, b) => a.cpuUsPerRequest - b.cpuUsPerRequest);
    cell.median = sorted[Math.floor(sorted.length / 2)];
    cell.syscalls = await syscallWindow(server, size);
  } catch (e) {
    cell.error = (e as Error).message;
  } finally {
    await client?.proc.stop();
    cell.exitCounters = (await stopOurs(server)).exit;
  }
  return cell;
}

cleanupOnSignal();
const head = header(
  "trigger",
  "Level- vs edge-triggered epoll: wait calls, events delivered and syscalls per request " +
    "under a small-message and a bulk echo load.",
);
const syscallTool = usePerf ? "perf stat" : strace ? "strace -c -f" : null;
if (!syscallTool) {
  console.error("neither perf (with syscall tracepoints) nor strace works: syscall counts skipped");
}
const cells: Cell[] = [];
try {
  for (let run = 1; run <= runs; run++) {
    for (const load of loads) {
      for (const trigger of ["level", "edge"] as const) {
        const t0 = Date.now();
        const c = await runCell(load, trigger, run);
        cells.push(c);
        progress(
          `run ${run}, ${load} ${trigger}: ` +
            (c.median
              ? `${num(c.median.cpuUsPerRequest, 2)} µs/req, ` +
                `${num(c.median.eventsPerRequest, 2)} events/req`
              : `no figures (${c.error})`) +
            ` [${((Date.now() - t0) / 1000).toFixed(1)} s]`,
        );
      }
    }
  }
} finally {
  await cleanupAll();
}

const per = (c: Cell, key: string) => c.syscalls?.perRequest[key] ?? (c.syscalls ? 0 : NaN);
const table = formatTable(
  [
    "run",
    "load",
    "trigger",
    "req/s",
    "CPU µs/req",
    "waits/req",
    "events/req",
    "events/wait",
    "epoll_wait*",
    "recvfrom*",
    "EAGAIN*",
    "sendto*",
    "epoll_ctl*",
    "syscalls*",
  ],
  cells.map((c) => {
    const m = c.median;
    return [
      String(c.run),
      `${c.load} (${LOADS[c.load].what})`,
      c.trigger,
      m ? num(m.rps) : "-",
      m ? num(m.cpuUsPerRequest, 2) : "-",
      m ? num(m.waitsPerRequest, 3) : "-",
      m ? num(m.eventsPerRequest, 3) : "-",
      m ? num(m.eventsPerWait, 1) : "-",
      num(per(c, "epoll_wait"), 3),
      num(per(c, "recvfrom"), 3),
      num(per(c, "recvfrom:EAGAIN"), 3),
      num(per(c, "sendto"), 3),
      num(per(c, "epoll_ctl"), 3),
      num(c.syscalls?.totalPerRequest, 3),
    ];
  }),
);
console.log(table);
console.log(
  `* per request, counted by ${syscallTool ?? "nothing"} over a separate window, all threads`,
);

const series = [{ name: "level-triggered" }, { name: "edge-triggered" }];
const cellOf = (load: string, t: string, run = 1) =>
  cells.find((c) => c.load === load && c.trigger === t && c.run === run);
const counterGroups = loads.flatMap((load) => [
  {
    label: `${load}: events`,
    sublabel: LOADS[load].what,
    values: ["level", "edge"].map((t) => cellOf(load, t)?.median?.eventsPerRequest ?? null),
  },
  {
    label: `${load}: waits`,
    sublabel: LOADS[load].what,
    values: ["level", "edge"].map((t) => cellOf(load, t)?.median?.waitsPerRequest ?? null),
  },
]);
const syscallGroups = (load: string) =>
  [
    ["recvfrom", "recv calls"],
    ["recvfrom:EAGAIN", "EAGAIN reads"],
    ["sendto", "send calls"],
    ["epoll_wait", "epoll_wait"],
    ["epoll_ctl", "epoll_ctl"],
  ].map(([key, label]) => ({
    label,
    values: ["level", "edge"].map((t) => {
      const c = cellOf(load, t);
      return c?.syscalls ? per(c, key) : null;
    }),
  }));
const panels = [
  barChartSvg({
    title: "Events delivered and wait calls per request",
    subtitle: "reactor counters, no tracer attached",
    yLabel: "per request",
    series,
    groups: counterGroups,
    footnote: `run 1; median of ${windows} windows of ${windowSeconds} s\n` +
      machineLine(head.machine),
    width: 700,
    format: (x) => x.toFixed(x < 1 ? 3 : 2),
  }),
  barChartSvg({
    title: "Server CPU per request",
    subtitle: "utime + stime of every server thread / requests, each run",
    yLabel: "server CPU µs per request",
    series,
    groups: Array.from({ length: runs }, (_, i) => i + 1).flatMap((run) =>
      loads.map((load) => ({
        label: `${load}, run ${run}`,
        sublabel: LOADS[load].what,
        values: ["level", "edge"].map((t) => cellOf(load, t, run)?.median?.cpuUsPerRequest ?? null),
      }))
    ),
    footnote:
      "each run starts fresh servers; the machine is shared with other work:\ncompare LT and ET within a run",
    width: 540 + 60 * runs * loads.length,
  }),
  ...loads.map((load) =>
    barChartSvg({
      title: `Syscalls per request, ${load} load`,
      subtitle: `${LOADS[load].what}; ${syscallTool}, all threads; run 1`,
      yLabel: "syscalls per request",
      series,
      groups: syscallGroups(load),
      footnote: syscallTool === "perf stat"
        ? "counted on the kernel's syscall tracepoints\nEAGAIN reads: recvfrom exits with -EAGAIN"
        : "strace slows the server, which then batches more events\nper epoll_wait",
      width: 620,
      format: (x) => x.toFixed(x < 1 ? 3 : 2),
    })
  ),
];
const files = writeResults("trigger", {
  ...head,
  params: {
    loads: loads.map((l) => ({ name: l, ...LOADS[l] })),
    windows,
    windowSeconds,
    runs,
    syscallSeconds,
    warmup,
    syscallTool,
  },
  table,
  results: cells,
}, grid([panels.slice(0, 2), panels.slice(2)]));
console.error(`wrote ${files.join(", ")}`);
