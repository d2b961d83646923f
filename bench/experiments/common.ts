/**
 * Shared pieces of the experiments in this folder: start our server (through
 * `serve_probe.ts`, which snapshots its counters on SIGUSR2), start the client processes of
 * `clients.ts`, measure a window (server CPU from /proc, counter deltas, client requests),
 * parse the server's exit line, write JSON and SVG under `docs/experiments/`, and clean up
 * every process on the way out, Ctrl-C included.
 *
 * @module
 */

import { resolve } from "node:path";
import { numberFlag } from "../lib/flags.ts";
import { exists, type MachineInfo, machineInfo } from "../lib/machine.ts";
import {
  clockTicksPerSecond,
  groupStats,
  readStat,
  systemCpu,
  ticksToSeconds,
} from "../lib/proc.ts";
import {
  type ServerHandle,
  shellQuote,
  startServer,
  stopAllServers,
  type StopReport,
  stopServer,
} from "../lib/server.ts";

/** The repository root. */
export const ROOT = resolve(import.meta.dirname!, "../..");
/** Where results go. */
export const OUT_DIR = resolve(ROOT, "docs/experiments");

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The flags of every experiment that measures windows, with their defaults;
 * spread into its `parseArgs` options and read back with `windowFlags`.
 */
export const WINDOW_OPTIONS = {
  windows: { type: "string", default: "3" },
  "window-seconds": { type: "string", default: "1.5" },
  warmup: { type: "string", default: "1" },
} as const;

/** The values of `WINDOW_OPTIONS`, checked (`tool` names the experiment in an error). */
export function windowFlags(
  tool: string,
  v: { windows?: string; "window-seconds"?: string; warmup?: string },
): { windows: number; windowSeconds: number; warmup: number } {
  return {
    windows: numberFlag(tool, "windows", v.windows!, { min: 1, integer: true }),
    windowSeconds: numberFlag(tool, "window-seconds", v["window-seconds"]!, { min: 0.1 }),
    warmup: numberFlag(tool, "warmup", v.warmup!),
  };
}

/** Prints progress on stderr (stdout carries the table). */
export function progress(msg: string): void {
  console.error(`  ${msg}`);
}

/** Which backends exist in this checkout (poll and select are added separately). */
export function availableBackends(): ("epoll" | "poll" | "select")[] {
  const out: ("epoll" | "poll" | "select")[] = ["epoll"];
  if (exists(resolve(ROOT, "reactor/poll.ts"))) out.push("poll");
  if (exists(resolve(ROOT, "reactor/select.ts"))) out.push("select");
  return out;
}

// ---------------------------------------------------------------------------------------
// Our server

/** What `serve_probe.ts` writes on SIGUSR2. */
export interface ServerSnapshot {
  seq: number;
  t: number;
  connections: number;
  counters: Record<string, number>;
  memory: { rss: number; heapTotal: number; heapUsed: number; external: number };
}

/** A server under test whose counters can be snapshotted. */
export interface Probe {
  handle: ServerHandle;
  /** The command line after the Deno flags (for the JSON). */
  args: string[];
  snapshot(timeoutMs?: number): Promise<ServerSnapshot>;
  /** True while the server process is alive. */
  alive(): boolean;
}

/** Settings of our server for one run. */
export interface OursOptions {
  backend?: string;
  trigger?: "level" | "edge";
  maxEvents?: number;
  app?: "echo" | "http";
  /** Expose V8's gc() so snapshots report the live heap. */
  exposeGc?: boolean;
  logDir?: string;
}

async function snapshotFrom(
  handle: ServerHandle,
  file: string,
  timeoutMs: number,
): Promise<ServerSnapshot> {
  const lines = () => {
    try {
      return Deno.readTextFileSync(file).trim().split("\n").filter(Boolean);
    } catch {
      return [];
    }
  };
  const before = lines().length;
  Deno.kill(handle.pid, "SIGUSR2");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = lines();
    if (now.length > before) return JSON.parse(now[now.length - 1]);
    if (Date.now() > deadline) {
      throw new Error(`${handle.name}: no snapshot within ${timeoutMs} ms (log ${handle.logPath})`);
    }
    await sleep(5);
  }
}

function isAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

/** Starts `serve_probe.ts` (our server) with the echo app on a free port. */
export async function startOurs(name: string, o: OursOptions = {}): Promise<Probe> {
  const logDir = o.logDir ?? await Deno.makeTempDir({ prefix: "experiment-" });
  const file = `${logDir}/${name.replace(/[^\w.-]/g, "_")}.snapshots.jsonl`;
  const args = [
    "--app",
    o.app ?? "echo",
    "--port",
    "$PORT",
    "--backend",
    o.backend ?? "epoll",
    "--trigger",
    o.trigger ?? "level",
    "--max-events",
    String(o.maxEvents ?? 1024),
    "--log-level",
    "debug",
    "--shutdown-timeout",
    "2",
  ];
  const deno = shellQuote(Deno.execPath());
  const v8 = o.exposeGc ? " --v8-flags=--expose-gc" : "";
  const cmd = `${deno} run -A${v8} bench/experiments/serve_probe.ts ${args.join(" ")}`;
  const handle = await startServer({
    name,
    cmd,
    cwd: ROOT,
    logDir,
    env: { SNAPSHOT_FILE: file, NO_COLOR: "1" },
  });
  return {
    handle,
    args,
    snapshot: (timeoutMs = 5000) => snapshotFrom(handle, file, timeoutMs),
    alive: () => isAlive(handle.pid),
  };
}

/** Starts a server that is not ours but speaks the same SIGUSR2 snapshot protocol. */
export async function startOther(name: string, script: string, extra: string[] = []) {
  const logDir = await Deno.makeTempDir({ prefix: "experiment-" });
  const file = `${logDir}/${name.replace(/[^\w.-]/g, "_")}.snapshots.jsonl`;
  const cmd = `${shellQuote(Deno.execPath())} run -A --no-config --v8-flags=--expose-gc ` +
    `${shellQuote(script)} ${extra.map(shellQuote).join(" ")}`;
  const handle = await startServer({ name, cmd, cwd: ROOT, logDir, env: { SNAPSHOT_FILE: file } });
  return {
    handle,
    args: extra,
    snapshot: (timeoutMs = 5000) => snapshotFrom(handle, file, timeoutMs),
    alive: () => isAlive(handle.pid),
  } satisfies Probe;
}

/** Parses `server ... stopped: { accepted: 1, waits: 2, ... }` from a log; null if absent. */
export function parseExitLine(log: string): Record<string, number> | null {
  const m = log.match(/server \S+ stopped: \{([^}]*)\}/);
  if (!m) return null;
  const out: Record<string, number> = {};
  for (const part of m[1].split(",")) {
    const kv = part.trim().match(/^(\w+): (-?[\d.]+)$/);
    if (kv) out[kv[1]] = Number(kv[2]);
  }
  return out;
}

/** Stops our server and returns its exit-line counters (null if it logged none). */
export async function stopOurs(
  p: Probe,
): Promise<{ stop: StopReport; exit: Record<string, number> | null; logTail: string }> {
  const stop = await stopServer(p.handle, 5000);
  let log = "";
  try {
    log = Deno.readTextFileSync(p.handle.logPath);
  } catch {
    // no log
  }
  return {
    stop,
    exit: parseExitLine(log),
    logTail: log.trimEnd().split("\n").filter((l) => !/ECONNRESET/.test(l)).slice(-4).join("\n"),
  };
}

/**
 * Polls the server until it reports `want` open connections, or the count stops changing for
 * `stableMs` (e.g. a backend that refuses some), or `timeoutMs` passes. Returns the last count.
 */
export async function waitConnections(
  p: Probe,
  want: number,
  timeoutMs = 30_000,
  stableMs = 1500,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  let since = Date.now();
  for (;;) {
    const s = await p.snapshot();
    if (s.connections >= want) return s.connections;
    if (s.connections !== last) {
      last = s.connections;
      since = Date.now();
    } else if (Date.now() - since > stableMs) return last;
    if (Date.now() > deadline) return last;
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------
// Client processes

const clients = new Set<ClientProc>();

/** A `clients.ts` process (or any process printing JSON lines), with its lines queued. */
export class ClientProc {
  readonly child: Deno.ChildProcess;
  readonly name: string;
  readonly #lines: Record<string, unknown>[] = [];
  #wake: (() => void) | null = null;
  #ended = false;
  #stderr = "";

  constructor(name: string, args: string[]) {
    this.name = name;
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", resolve(ROOT, "bench/experiments/clients.ts"), ...args],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    clients.add(this);
    this.#read();
    this.#readErr();
  }

  async #read(): Promise<void> {
    let buf = "";
    for await (const chunk of this.child.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        try {
          this.#lines.push(JSON.parse(line));
        } catch {
          this.#stderr += line + "\n";
        }
        this.#wake?.();
      }
    }
    this.#ended = true;
    this.#wake?.();
  }

  async #readErr(): Promise<void> {
    for await (const chunk of this.child.stderr.pipeThrough(new TextDecoderStream())) {
      this.#stderr = (this.#stderr + chunk).slice(-4000);
    }
  }

  /** The next line whose `type` is `type` (earlier lines of other types are dropped). */
  async next(type: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.#lines.length) {
        const l = this.#lines.shift()!;
        if (l.type === type) return l;
      }
      if (this.#ended) throw new Error(`${this.name} ended before "${type}": ${this.#stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: no "${type}" in ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.#wake = () => {
          clearTimeout(t);
          r();
        };
      });
      this.#wake = null;
    }
  }

  /** Sends SIGUSR2 and returns the line it answers with. */
  ask(type: string): Promise<Record<string, unknown>> {
    Deno.kill(this.child.pid, "SIGUSR2");
    return this.next(type, 10_000);
  }

  /** SIGTERM, then SIGKILL after 3 s; waits for the exit. */
  async stop(): Promise<void> {
    clients.delete(this);
    try {
      this.child.kill("SIGTERM");
    } catch {
      // gone already
    }
    const t = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // gone
      }
    }, 3000);
    await this.child.status;
    clearTimeout(t);
  }
}

/** Starts `--connections` echo ping-pong clients and waits until they are connected. */
export async function startLoad(port: number, connections: number, size = 64, maxSeconds = 300) {
  const c = new ClientProc("load", [
    "load",
    "--port",
    String(port),
    "--connections",
    String(connections),
    "--size",
    String(size),
    "--max-seconds",
    String(maxSeconds),
  ]);
  const ready = await c.next("ready", 60_000);
  return { proc: c, ready };
}

/** Starts a holder of `count` idle connections and waits until it has connected them all. */
export async function startHolder(port: number, count: number, maxSeconds = 300) {
  const c = new ClientProc("hold", [
    "hold",
    "--port",
    String(port),
    "--count",
    String(count),
    "--max-seconds",
    String(maxSeconds),
  ]);
  const ready = await c.next("ready", 120_000);
  return { proc: c, ready };
}

/** Stops every client process and server still running. */
export async function cleanupAll(): Promise<void> {
  await Promise.all([...clients].map((c) => c.stop()));
  await stopAllServers();
}

/** Ctrl-C or SIGTERM: clean up and exit 130. Call once at the start of an experiment. */
export function cleanupOnSignal(): void {
  const handler = async () => {
    console.error("\ninterrupted: stopping every process this run started");
    await cleanupAll();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", handler);
  Deno.addSignalListener("SIGTERM", handler);
}

// ---------------------------------------------------------------------------------------
// Measuring a window

/** Everything sampled at one end of a window. */
export interface WindowEnd {
  t: number;
  cpuTicks: number;
  /** User-mode share of cpuTicks. */
  userTicks: number;
  rssBytes: number;
  sys: { busy: number; total: number; steal: number };
  server: ServerSnapshot;
  load: Record<string, unknown> | null;
  loadCpuTicks: number | null;
}

/** The figures of one measured window. */
export interface WindowFigures {
  seconds: number;
  /** Requests completed, from the server's bytesIn (echo: message size bytes per request). */
  requests: number;
  /** Requests the load generator counted over the same window (cross-check). */
  clientRequests: number | null;
  rps: number;
  cpuTicks: number;
  cpuSeconds: number;
  /** Server CPU cores kept busy (cpu seconds per wall second). */
  serverCores: number;
  /** The load generator's CPU cores over the window (null without one). */
  loadCores: number | null;
  /** Whole machine's busy cores over the window (server, clients and anything else). */
  machineBusyCores: number;
  cpuUsPerRequest: number;
  /** The user-mode part of cpuUsPerRequest (JS, V8, libc); the rest is kernel time. */
  userUsPerRequest: number;
  /** The kernel part of cpuUsPerRequest (syscalls; loopback softirq work is not in it). */
  sysUsPerRequest: number;
  /** Counter deltas over the window. */
  counters: Record<string, number>;
  waitsPerRequest: number;
  eventsPerRequest: number;
  eventsPerWait: number;
  /** Server CPU per wait call (all CPU of the window divided by wait calls). */
  cpuUsPerWait: number;
  /** Mean round-trip time seen by the clients, ms. */
  clientLatencyMs: number | null;
  rssBytes: number;
}

async function sampleEnd(server: Probe, load: ClientProc | null): Promise<WindowEnd> {
  const t = performance.now();
  const s = server.handle.sample();
  let userTicks = 0;
  for (const st of groupStats(server.handle.pid)) userTicks += st.utime + st.cutime;
  const sys = systemCpu();
  const ls = load ? readStat(load.child.pid) : null;
  const loadCpuTicks = ls ? ls.utime + ls.stime : null;
  const [snap, l] = await Promise.all([server.snapshot(), load ? load.ask("snapshot") : null]);
  return {
    t,
    cpuTicks: s.cpuTicks,
    userTicks,
    rssBytes: s.rssBytes,
    sys,
    server: snap,
    load: l,
    loadCpuTicks,
  };
}

/** Measures the server for `seconds` while the load runs; `msgSize` converts bytes to requests. */
export async function measureWindow(
  server: Probe,
  load: ClientProc | null,
  seconds: number,
  msgSize: number,
): Promise<WindowFigures> {
  const a = await sampleEnd(server, load);
  await sleep(seconds * 1000);
  const b = await sampleEnd(server, load);
  return figures(a, b, msgSize);
}

/** Derives the window figures from its two ends. */
export function figures(a: WindowEnd, b: WindowEnd, msgSize: number): WindowFigures {
  const wall = (b.t - a.t) / 1000;
  const counters: Record<string, number> = {};
  for (const k of Object.keys(b.server.counters)) {
    counters[k] = b.server.counters[k] - (a.server.counters[k] ?? 0);
  }
  const requests = Math.round(counters.bytesIn / msgSize);
  const cpuTicks = b.cpuTicks - a.cpuTicks;
  const userTicks = b.userTicks - a.userTicks;
  const cpuSeconds = ticksToSeconds(cpuTicks);
  const sysTotal = b.sys.total - a.sys.total;
  const clientRequests = a.load && b.load
    ? (b.load.requests as number) - (a.load.requests as number)
    : null;
  const latency = a.load && b.load && clientRequests
    ? ((b.load.latencySumMs as number) - (a.load.latencySumMs as number)) / clientRequests
    : null;
  return {
    seconds: wall,
    requests,
    clientRequests,
    rps: requests / wall,
    cpuTicks,
    cpuSeconds,
    serverCores: cpuSeconds / wall,
    loadCores: a.loadCpuTicks !== null && b.loadCpuTicks !== null
      ? ticksToSeconds(b.loadCpuTicks - a.loadCpuTicks) / wall
      : null,
    machineBusyCores: sysTotal > 0
      ? (b.sys.busy - a.sys.busy) / sysTotal * navigator.hardwareConcurrency
      : 0,
    cpuUsPerRequest: requests > 0 ? cpuSeconds * 1e6 / requests : NaN,
    userUsPerRequest: requests > 0 ? ticksToSeconds(userTicks) * 1e6 / requests : NaN,
    sysUsPerRequest: requests > 0 ? ticksToSeconds(cpuTicks - userTicks) * 1e6 / requests : NaN,
    counters,
    waitsPerRequest: requests > 0 ? counters.waits / requests : NaN,
    eventsPerRequest: requests > 0 ? counters.events / requests : NaN,
    eventsPerWait: counters.waits > 0 ? counters.events / counters.waits : NaN,
    cpuUsPerWait: counters.waits > 0 ? cpuSeconds * 1e6 / counters.waits : NaN,
    clientLatencyMs: latency,
    rssBytes: b.rssBytes,
  };
}

// ---------------------------------------------------------------------------------------
// Output

/** Header of every result file. */
export interface ResultHeader {
  experiment: string;
  description: string;
  date: string;
  machine: MachineInfo & { clockTicksPerSecond: number; openFilesLimit: string | null };
  command: string;
}

/** Machine facts plus the command that produced the file. */
export function header(experiment: string, description: string): ResultHeader {
  let limit: string | null = null;
  try {
    const m = Deno.readTextFileSync("/proc/self/limits").match(/^Max open files\s+(\d+)\s+(\d+)/m);
    if (m) limit = `${m[1]} soft / ${m[2]} hard`;
  } catch {
    // no /proc
  }
  return {
    experiment,
    description,
    date: new Date().toISOString(),
    machine: {
      ...machineInfo(),
      clockTicksPerSecond: clockTicksPerSecond(),
      openFilesLimit: limit,
    },
    command: `deno run -A bench/experiments/${experiment}.ts ${Deno.args.join(" ")}`.trim(),
  };
}

/** Writes `docs/experiments/<name>.json`; returns its path. */
export function writeJson(name: string, json: unknown): string {
  Deno.mkdirSync(OUT_DIR, { recursive: true });
  const j = resolve(OUT_DIR, `${name}.json`);
  Deno.writeTextFileSync(j, JSON.stringify(json, null, 2) + "\n");
  return j;
}

/** Writes `docs/experiments/<name>.json` and `.svg`; returns their paths. */
export function writeResults(name: string, json: unknown, svg: string): string[] {
  Deno.mkdirSync(OUT_DIR, { recursive: true });
  const j = resolve(OUT_DIR, `${name}.json`);
  const s = resolve(OUT_DIR, `${name}.svg`);
  Deno.writeTextFileSync(j, JSON.stringify(json, null, 2) + "\n");
  Deno.writeTextFileSync(s, svg);
  // In the repo's own format, so a fresh run leaves `deno fmt --check` clean.
  new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", j, s], stderr: "null" })
    .outputSync();
  return [j, s];
}

/** Places standalone SVG documents (from `barChartSvg`) side by side in one document. */
export function sideBySide(svgs: string[]): string {
  return grid([svgs]);
}

/** Places standalone SVG documents in rows (each row left to right, rows top to bottom). */
export function grid(rows: string[][]): string {
  let y = 0;
  let width = 0;
  const parts: string[] = [];
  for (const row of rows) {
    let x = 0;
    let rowHeight = 0;
    for (const svg of row) {
      const w = Number(svg.match(/<svg[^>]* width="([\d.]+)"/)?.[1] ?? 720);
      const h = Number(svg.match(/<svg[^>]* height="([\d.]+)"/)?.[1] ?? 460);
      const body = svg.replace(/^<\?xml[^>]*>\s*/, "");
      parts.push(`<g transform="translate(${x} ${y})">${body}</g>`);
      x += w;
      rowHeight = Math.max(rowHeight, h);
    }
    width = Math.max(width, x);
    y += rowHeight;
  }
  return `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" ` +
    `viewBox="0 0 ${width} ${y}">\n` +
    `<rect width="100%" height="100%" fill="#fff"/>\n${parts.join("\n")}\n</svg>\n`;
}

/** A short machine line for chart subtitles. */
export function machineLine(m: MachineInfo): string {
  return `${m.cpuModel}, ${m.nproc} CPUs, Linux ${m.kernel}, Deno ${m.deno}`;
}
