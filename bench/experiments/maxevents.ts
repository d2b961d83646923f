/**
 * Experiment "maxevents": does a larger epoll_wait events array mean fewer wait calls, and
 * what does that buy in CPU?
 *
 *   deno run -A bench/experiments/maxevents.ts [--max-events 1,16,64,1024]
 *                                              [--connections 1000] [--size 64] [--runs 2]
 *
 * For each size: start our server (epoll, level-triggered, `--max-events N`), connect
 * `--connections` echo ping-pong clients from one client process, warm up, and measure
 * `--windows` windows: wait calls per request, events per wait, server CPU per request
 * (median window by CPU per request). The whole sweep runs `--runs` times with fresh servers,
 * because how many fds are ready per wait depends on how the closed loop of 1000 clients
 * happens to settle. Writes docs/experiments/maxevents.json and .svg.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { numberFlag, numberListFlag, orExit } from "../lib/flags.ts";
import { barChartSvg } from "../lib/svg.ts";
import { formatTable, num } from "../lib/table.ts";
import {
  cleanupAll,
  cleanupOnSignal,
  header,
  machineLine,
  measureWindow,
  progress,
  sideBySide,
  sleep,
  startLoad,
  startOurs,
  stopOurs,
  waitConnections,
  WINDOW_OPTIONS,
  type WindowFigures,
  windowFlags,
  writeResults,
} from "./common.ts";

const { values: v } = orExit("maxevents", () =>
  parseArgs({
    args: Deno.args,
    options: {
      "max-events": { type: "string", default: "1,16,64,1024" },
      connections: { type: "string", default: "1000" },
      size: { type: "string", default: "64" },
      ...WINDOW_OPTIONS,
      runs: { type: "string", default: "2" },
    },
    strict: true,
  }));
const sizes = numberListFlag("maxevents", "max-events", v["max-events"]!, {
  min: 1,
  integer: true,
});
const connections = numberFlag("maxevents", "connections", v.connections!, {
  min: 1,
  integer: true,
});
const size = numberFlag("maxevents", "size", v.size!, { min: 1, integer: true });
const { windows, windowSeconds, warmup } = windowFlags("maxevents", v);
const runs = numberFlag("maxevents", "runs", v.runs!, { min: 1, integer: true });

interface Cell {
  run: number;
  maxEvents: number;
  connections: number;
  median: WindowFigures | null;
  windows: WindowFigures[];
  exitCounters: Record<string, number> | null;
  error: string | null;
}

async function runCell(maxEvents: number, run: number): Promise<Cell> {
  const cell: Cell = {
    run,
    maxEvents,
    connections: 0,
    median: null,
    windows: [],
    exitCounters: null,
    error: null,
  };
  const server = await startOurs(`maxevents-${maxEvents}`, { maxEvents });
  let load = null;
  try {
    load = await startLoad(server.handle.port, connections, size);
    cell.connections = await waitConnections(server, connections);
    await sleep(warmup * 1000);
    for (let i = 0; i < windows; i++) {
      cell.windows.push(await measureWindow(server, load.proc, windowSeconds, size));
    }
    const sorted = [...cell.windows].sort((a, b) => a.cpuUsPerRequest - b.cpuUsPerRequest);
    cell.median = sorted[Math.floor(sorted.length / 2)];
  } catch (e) {
    cell.error = (e as Error).message;
  } finally {
    await load?.proc.stop();
    cell.exitCounters = (await stopOurs(server)).exit;
  }
  return cell;
}

cleanupOnSignal();
const head = header(
  "maxevents",
  "Wait calls and server CPU per request for several epoll_wait maxevents sizes, with many " +
    "active connections.",
);
const cells: Cell[] = [];
try {
  for (let run = 1; run <= runs; run++) {
    for (const n of sizes) {
      const t0 = Date.now();
      const c = await runCell(n, run);
      cells.push(c);
      progress(
        `run ${run}, maxevents ${n}: ` +
          (c.median
            ? `${num(c.median.waitsPerRequest, 3)} waits/req, ${
              num(c.median.cpuUsPerRequest, 2)
            } µs/req`
            : `no figures (${c.error})`) +
          ` [${((Date.now() - t0) / 1000).toFixed(1)} s]`,
      );
    }
  }
} finally {
  await cleanupAll();
}

const table = formatTable(
  [
    "run",
    "maxevents",
    "conns",
    "req/s",
    "CPU µs/req",
    "user",
    "sys",
    "waits/req",
    "events/wait",
    "CPU µs/wait",
    "parked",
    "yields/s",
    "srv cores",
    "machine",
  ],
  cells.map((c) => {
    const m = c.median;
    return [
      String(c.run),
      String(c.maxEvents),
      String(c.connections),
      m ? num(m.rps) : "-",
      m ? num(m.cpuUsPerRequest, 2) : "-",
      m ? num(m.userUsPerRequest, 2) : "-",
      m ? num(m.sysUsPerRequest, 2) : "-",
      m ? num(m.waitsPerRequest, 3) : "-",
      m ? num(m.eventsPerWait, 2) : "-",
      m ? num(m.cpuUsPerWait, 2) : "-",
      m ? String(m.counters.parkedWaits) : "-",
      m ? num(m.counters.yields / m.seconds) : "-",
      m ? num(m.serverCores, 2) : "-",
      m ? num(m.machineBusyCores, 2) : "-",
    ];
  }),
);
console.log(table);

const runNumbers = Array.from({ length: runs }, (_, i) => i + 1);
const series = runNumbers.map((r) => ({ name: `run ${r}` }));
const groups = (f: (w: WindowFigures) => number) =>
  sizes.map((n) => {
    const of = (r: number) => cells.find((c) => c.maxEvents === n && c.run === r)?.median;
    return {
      label: `maxevents ${n}`,
      sublabel: `events/wait: ${runNumbers.map((r) => num(of(r)?.eventsPerWait, 1)).join(", ")}`,
      values: runNumbers.map((r) => {
        const m = of(r);
        return m ? f(m) : null;
      }),
    };
  });
const foot = `${connections} echo ping-pong clients (${size} B) in one process; epoll, ` +
  `level-triggered; median of ${windows} windows of ${windowSeconds} s\n${
    machineLine(head.machine)
  }`;
const svg = sideBySide([
  barChartSvg({
    title: "epoll_wait calls per request",
    subtitle: `${connections} active connections`,
    yLabel: "wait calls per request",
    series,
    groups: groups((w) => w.waitsPerRequest),
    footnote: foot,
    width: 720,
    format: (x) => x.toFixed(x < 0.1 ? 4 : 3),
  }),
  barChartSvg({
    title: "Server CPU per request",
    subtitle: "utime + stime of every server thread / requests",
    yLabel: "server CPU µs per request",
    series,
    groups: groups((w) => w.cpuUsPerRequest),
    footnote: "lower is better\n ",
    width: 720,
  }),
]);
const files = writeResults("maxevents", {
  ...head,
  params: {
    maxEvents: sizes,
    connections,
    messageBytes: size,
    windows,
    windowSeconds,
    warmup,
    runs,
  },
  table,
  results: cells,
}, svg);
console.error(`wrote ${files.join(", ")}`);
