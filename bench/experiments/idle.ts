/**
 * Experiment "idle": does the cost of a wait grow with connections that are open but silent?
 *
 *   deno run -A bench/experiments/idle.ts [--idle 0,900,1000,4000,9000] [--backends epoll,poll,select]
 *                                         [--connections 50] [--size 64] [--windows 3]
 *                                         [--window-seconds 1.5]
 *
 * For each backend and each N: start our server (echo app), start `--connections` echo
 * ping-pong clients in one process, then have a second process open N connections that never
 * send a byte. After a warm-up, measure `--windows` windows: server CPU (utime+stime of all
 * its threads, /proc) per request, and wait calls and events from the reactor's counters
 * (differenced over the window). The figures of the median window (by CPU per request) are
 * reported. The active clients connect first, so they hold the low fds; with select, the
 * idle connections whose fd is 1024 or more are refused by the server, and that is recorded
 * as the result. Writes docs/experiments/idle.json and idle.svg.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { numberFlag, numberListFlag, orExit } from "../lib/flags.ts";
import { barChartSvg } from "../lib/svg.ts";
import { formatTable, num } from "../lib/table.ts";
import {
  availableBackends,
  cleanupAll,
  cleanupOnSignal,
  header,
  machineLine,
  measureWindow,
  progress,
  sideBySide,
  sleep,
  startHolder,
  startLoad,
  startOurs,
  stopOurs,
  waitConnections,
  WINDOW_OPTIONS,
  type WindowFigures,
  windowFlags,
  writeResults,
} from "./common.ts";

const { values: v } = orExit("idle", () =>
  parseArgs({
    args: Deno.args,
    options: {
      idle: { type: "string", default: "0,900,1000,4000,9000" },
      backends: { type: "string" },
      connections: { type: "string", default: "50" },
      size: { type: "string", default: "64" },
      ...WINDOW_OPTIONS,
    },
    strict: true,
  }));

const idles = numberListFlag("idle", "idle", v.idle!, { integer: true });
const backends = v.backends ? v.backends.split(",") : availableBackends();
const connections = numberFlag("idle", "connections", v.connections!, { min: 1, integer: true });
const size = numberFlag("idle", "size", v.size!, { min: 1, integer: true });
const { windows, windowSeconds, warmup } = windowFlags("idle", v);

interface Cell {
  backend: string;
  idle: number;
  /** Idle connections the holder opened. */
  idleOpened: number;
  /** Of those, still open after the server had dealt with them all. */
  idleHeld: number;
  /** Closed or reset by the server (select: fds >= 1024). */
  idleRefused: number;
  /** The holder's failed connects, by errno (select: the listener was gone). */
  idleConnectFailures: Record<string, number>;
  /** Connections the server reported open during the measurement. */
  serverConnections: number;
  /** The median window (by CPU per request). */
  median: WindowFigures | null;
  windows: WindowFigures[];
  exitCounters: Record<string, number> | null;
  error: string | null;
  logTail: string;
}

async function runCell(backend: string, idle: number): Promise<Cell> {
  const cell: Cell = {
    backend,
    idle,
    idleOpened: 0,
    idleHeld: 0,
    idleRefused: 0,
    idleConnectFailures: {},
    serverConnections: 0,
    median: null,
    windows: [],
    exitCounters: null,
    error: null,
    logTail: "",
  };
  const server = await startOurs(`idle-${backend}-${idle}`, { backend });
  let load = null;
  let holder = null;
  try {
    load = await startLoad(server.handle.port, connections, size);
    if ((load.ready.connections as number) < connections) {
      throw new Error(`only ${load.ready.connections} of ${connections} load connections`);
    }
    if (idle > 0) {
      holder = await startHolder(server.handle.port, idle);
      cell.idleOpened = holder.ready.held as number;
      cell.idleConnectFailures = holder.ready.failures as Record<string, number>;
    }
    cell.serverConnections = await waitConnections(server, connections + idle);
    await sleep(300);
    if (holder) {
      const a = await holder.proc.ask("alive");
      cell.idleHeld = a.alive as number;
      cell.idleRefused = cell.idleOpened - cell.idleHeld;
    }
    if (!server.alive()) throw new Error("server exited");
    await sleep(warmup * 1000);
    for (let i = 0; i < windows; i++) {
      cell.windows.push(await measureWindow(server, load.proc, windowSeconds, size));
    }
    const sorted = [...cell.windows].sort((a, b) => a.cpuUsPerRequest - b.cpuUsPerRequest);
    cell.median = sorted[Math.floor(sorted.length / 2)];
    cell.serverConnections = (await server.snapshot()).connections;
  } catch (e) {
    cell.error = (e as Error).message;
  } finally {
    await load?.proc.stop();
    const stop = await stopOurs(server);
    cell.exitCounters = stop.exit;
    cell.logTail = stop.logTail;
    await holder?.proc.stop();
  }
  return cell;
}

cleanupOnSignal();
const head = header(
  "idle",
  "Server CPU per request and per wait call under a fixed echo load while N idle connections " +
    "are held open by another process, per readiness backend.",
);
console.error(`idle: backends ${backends.join(",")}, N ${idles.join(",")}`);
const cells: Cell[] = [];
try {
  for (const backend of backends) {
    for (const idle of idles) {
      const t0 = Date.now();
      const c = await runCell(backend, idle);
      cells.push(c);
      const m = c.median;
      progress(
        `${backend} N=${idle}: ` +
          (m
            ? `${num(m.cpuUsPerRequest, 2)} µs/req, ${num(m.cpuUsPerWait, 1)} µs/wait, ` +
              `${num(m.rps)} req/s`
            : `no figures (${c.error})`) +
          (c.idleRefused ? `, ${c.idleRefused} idle refused` : "") +
          ` [${((Date.now() - t0) / 1000).toFixed(1)} s]`,
      );
    }
  }
} finally {
  await cleanupAll();
}

function note(c: Cell): string {
  if (c.error) return `error: ${c.error}`;
  const failed = Object.values(c.idleConnectFailures).reduce((a, b) => a + b, 0);
  if (c.idleRefused > 0 || failed > 0) {
    return `held ${c.idleHeld} of ${c.idle} idle: ${c.idleRefused} closed by the server, ` +
      `${failed} could not connect`;
  }
  return "";
}

const rows = cells.map((c) => {
  const m = c.median;
  return [
    c.backend,
    String(c.idle),
    String(c.idle ? c.idleHeld : 0),
    m ? num(m.rps) : "-",
    m ? num(m.cpuUsPerRequest, 2) : "-",
    m ? num(m.userUsPerRequest, 2) : "-",
    m ? num(m.sysUsPerRequest, 2) : "-",
    m ? num(m.waitsPerRequest, 3) : "-",
    m ? num(m.eventsPerWait, 1) : "-",
    m ? num(m.cpuUsPerWait, 1) : "-",
    m ? num(m.serverCores, 2) : "-",
    m ? num(m.machineBusyCores, 2) : "-",
    note(c),
  ];
});
const table = formatTable(
  [
    "backend",
    "idle N",
    "held",
    "req/s",
    "CPU µs/req",
    "user",
    "sys",
    "waits/req",
    "events/wait",
    "CPU µs/wait",
    "srv cores",
    "machine",
    "note",
  ],
  rows,
);
console.log(table);

const cellOf = (b: string, n: number) => cells.find((x) => x.backend === b && x.idle === n);
/** A bar only where the backend held every idle connection it was given. */
const value = (b: string, n: number, f: (w: WindowFigures) => number) => {
  const c = cellOf(b, n);
  return c?.median && (n === 0 || c.idleHeld === n) ? f(c.median) : null;
};
const series = backends.map((name) => ({ name }));
const foot = `${connections} echo ping-pong clients (${size} B) + N idle connections from a ` +
  `second process;\nmedian of ${windows} windows of ${windowSeconds} s. n/a: the backend ` +
  `did not hold all N (select: fds >= 1024 refused).\n${machineLine(head.machine)}`;
const groups = (f: (w: WindowFigures) => number) =>
  idles.map((n) => {
    const short = backends.map((b) => [b, cellOf(b, n)] as const).filter(([, c]) =>
      c && n > 0 && c.idleHeld < n
    ).map(([b, c]) => `${b} held ${c!.idleHeld}`);
    return {
      label: `${n} idle`,
      sublabel: short.join(", ") || undefined,
      values: backends.map((b) => value(b, n, f)),
    };
  });
const svg = sideBySide([
  barChartSvg({
    title: "Server CPU per request vs idle connections",
    subtitle: "lower is better",
    yLabel: "server CPU µs per request",
    series,
    groups: groups((w) => w.cpuUsPerRequest),
    footnote: foot,
    width: 760,
  }),
  barChartSvg({
    title: "Server CPU per wait call",
    subtitle: "all server CPU of the window / (epoll_wait | poll | select) calls",
    yLabel: "server CPU µs per wait call",
    series,
    groups: groups((w) => w.cpuUsPerWait),
    footnote: "a wait call returns several events under this load (events/wait in the " +
      "table),\nso this is wait + dispatch + recv + send for a batch\n ",
    width: 760,
  }),
]);
const files = writeResults("idle", {
  ...head,
  params: {
    idle: idles,
    backends,
    connections,
    messageBytes: size,
    windows,
    windowSeconds,
    warmup,
  },
  table,
  results: cells,
}, svg);
console.error(`wrote ${files.join(", ")}`);
