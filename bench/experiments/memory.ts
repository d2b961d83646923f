/**
 * Experiment "memory": what does one idle TCP connection cost, in the server process and in
 * the kernel?
 *
 *   deno run -A bench/experiments/memory.ts [--idle 9000] [--listen-read 0,4096]
 *
 * For each server (ours, then a `Deno.listen` holder for each `--listen-read` size): start it
 * with `--v8-flags=--expose-gc`, snapshot it (gc, `Deno.memoryUsage()`, RSS from /proc) and
 * the kernel (/proc/net/sockstat, /proc/meminfo, /proc/slabinfo), have another process open
 * `--idle` connections that never send a byte, wait until the server has them all, settle,
 * snapshot again, and read `ss -tmn` for the server's sockets. Per-connection figures are the
 * deltas divided by the number of connections. On loopback each connection is two sockets
 * (the holder's end and the server's end); kernel figures are given per connection (both
 * ends) and per socket. Writes docs/experiments/memory.json and memory.svg.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { numberFlag, numberListFlag, orExit } from "../lib/flags.ts";
import { resolve } from "node:path";
import { which } from "../lib/machine.ts";
import { barChartSvg } from "../lib/svg.ts";
import { formatTable, num } from "../lib/table.ts";
import {
  cleanupAll,
  cleanupOnSignal,
  header,
  machineLine,
  type Probe,
  progress,
  ROOT,
  type ServerSnapshot,
  sideBySide,
  sleep,
  startHolder,
  startOther,
  startOurs,
  stopOurs,
  waitConnections,
  writeResults,
} from "./common.ts";
import { stopServer } from "../lib/server.ts";

const { values: v } = orExit("memory", () =>
  parseArgs({
    args: Deno.args,
    options: {
      idle: { type: "string", default: "9000" },
      "listen-read": { type: "string", default: "0,4096" },
      settle: { type: "string", default: "1.5" },
    },
    strict: true,
  }));
const idle = numberFlag("memory", "idle", v.idle!, { min: 1, integer: true });
const listenReads = numberListFlag("memory", "listen-read", v["listen-read"]!, { integer: true });
const settleMs = numberFlag("memory", "settle", v.settle!) * 1000;
const PAGE = 4096;

/** Kernel-wide socket and slab figures at one instant. */
interface KernelSample {
  tcpInuse: number;
  tcpAlloc: number;
  /** TCP buffer memory charged, in pages (/proc/net/sockstat "mem"). */
  tcpMemPages: number;
  slabBytes: number;
  /** Bytes per slab cache: active objects times object size. */
  caches: Record<string, number>;
  /** Object counts per slab cache. */
  objects: Record<string, number>;
  /** Object size per slab cache, bytes. */
  sizes: Record<string, number>;
}

function kernelSample(): KernelSample {
  const sockstat = Deno.readTextFileSync("/proc/net/sockstat");
  const tcp = sockstat.match(/^TCP: inuse (\d+) orphan \d+ tw \d+ alloc (\d+) mem (\d+)/m);
  const meminfo = Deno.readTextFileSync("/proc/meminfo");
  const slab = Number(meminfo.match(/^Slab:\s+(\d+) kB/m)?.[1] ?? 0) * 1024;
  const caches: Record<string, number> = {};
  const objects: Record<string, number> = {};
  const sizes: Record<string, number> = {};
  try {
    for (const line of Deno.readTextFileSync("/proc/slabinfo").split("\n").slice(2)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4) continue;
      caches[f[0]] = Number(f[1]) * Number(f[3]);
      objects[f[0]] = Number(f[1]);
      sizes[f[0]] = Number(f[3]);
    }
  } catch {
    // /proc/slabinfo needs root
  }
  return {
    tcpInuse: Number(tcp?.[1] ?? 0),
    tcpAlloc: Number(tcp?.[2] ?? 0),
    tcpMemPages: Number(tcp?.[3] ?? 0),
    slabBytes: slab,
    caches,
    objects,
    sizes,
  };
}

/** Sums the `skmem` fields of `ss -tmn` over the established sockets matching `filter`. */
async function ssMemory(filter: string): Promise<Record<string, number> | null> {
  if (!which("ss")) return null;
  const out = await new Deno.Command("ss", {
    args: ["-tmnH", "state", "established", filter],
    stdout: "piped",
    stderr: "null",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const sums: Record<string, number> = { sockets: 0 };
  for (const m of text.matchAll(/skmem:\(([^)]*)\)/g)) {
    sums.sockets++;
    for (const kv of m[1].split(",")) {
      const f = kv.match(/^([a-z]+)(\d+)$/);
      if (f) sums[f[1]] = (sums[f[1]] ?? 0) + Number(f[2]);
    }
  }
  return sums;
}

function rssOf(p: Probe): number {
  return p.handle.sample().rssBytes;
}

interface MemoryRun {
  server: string;
  description: string;
  connections: number;
  before: { snapshot: ServerSnapshot; rssBytes: number; kernel: KernelSample };
  after: { snapshot: ServerSnapshot; rssBytes: number; kernel: KernelSample };
  perConnection: {
    rssBytes: number;
    heapUsedBytes: number;
    heapTotalBytes: number;
    externalBytes: number;
    kernelSlabBytes: number;
    kernelTcpMemBytes: number;
  };
  /** Slab caches that grew by at least 8 bytes per connection: bytes per connection. */
  slabPerConnection: Record<string, number>;
  /** Objects per connection of the same caches. */
  slabObjectsPerConnection: Record<string, number>;
  /** Object size of the same caches, bytes. */
  slabObjectSize: Record<string, number>;
  /** `ss -tmn` skmem sums over the server's and the holder's sockets. */
  ssServerSide: Record<string, number> | null;
  ssClientSide: Record<string, number> | null;
  error: string | null;
}

async function measure(name: string, description: string, p: Probe): Promise<MemoryRun> {
  const port = p.handle.port;
  await sleep(settleMs);
  const base = await p.snapshot();
  const before = { snapshot: base, rssBytes: rssOf(p), kernel: kernelSample() };
  const holder = await startHolder(port, idle);
  let after;
  let ssServerSide = null;
  let ssClientSide = null;
  let error: string | null = null;
  try {
    const want = base.connections + (holder.ready.held as number);
    const got = await waitConnections(p, want, 60_000);
    if (got < want) error = `server has ${got} of ${want} connections`;
    await sleep(settleMs);
    const snap = await p.snapshot();
    after = { snapshot: snap, rssBytes: rssOf(p), kernel: kernelSample() };
    ssServerSide = await ssMemory(`( sport = :${port} )`);
    ssClientSide = await ssMemory(`( dport = :${port} )`);
  } finally {
    await holder.proc.stop();
  }
  const n = after.snapshot.connections - base.connections;
  const slabPerConnection: Record<string, number> = {};
  const slabObjectsPerConnection: Record<string, number> = {};
  const slabObjectSize: Record<string, number> = {};
  for (const [cache, bytes] of Object.entries(after.kernel.caches)) {
    const d = (bytes - (before.kernel.caches[cache] ?? 0)) / n;
    if (d >= 8) {
      slabPerConnection[cache] = Math.round(d);
      slabObjectSize[cache] = after.kernel.sizes[cache];
      slabObjectsPerConnection[cache] = Number(
        ((after.kernel.objects[cache] - (before.kernel.objects[cache] ?? 0)) / n).toFixed(2),
      );
    }
  }
  return {
    server: name,
    description,
    connections: n,
    before,
    after,
    perConnection: {
      rssBytes: (after.rssBytes - before.rssBytes) / n,
      heapUsedBytes: (after.snapshot.memory.heapUsed - base.memory.heapUsed) / n,
      heapTotalBytes: (after.snapshot.memory.heapTotal - base.memory.heapTotal) / n,
      externalBytes: (after.snapshot.memory.external - base.memory.external) / n,
      kernelSlabBytes: (after.kernel.slabBytes - before.kernel.slabBytes) / n,
      kernelTcpMemBytes: (after.kernel.tcpMemPages - before.kernel.tcpMemPages) * PAGE / n,
    },
    slabPerConnection,
    slabObjectsPerConnection,
    slabObjectSize,
    ssServerSide,
    ssClientSide,
    error,
  };
}

cleanupOnSignal();
const head = header(
  "memory",
  "Memory per idle TCP connection: server RSS and JS heap (ours vs Deno.listen), kernel slab " +
    "and socket buffer memory.",
);
const runs: MemoryRun[] = [];
try {
  {
    const t0 = Date.now();
    const p = await startOurs("memory-ours", { exposeGc: true });
    try {
      runs.push(
        await measure("ours (epoll)", "main.ts serve --app echo, epoll, level-triggered", p),
      );
    } finally {
      await stopOurs(p);
    }
    progress(`ours: done [${((Date.now() - t0) / 1000).toFixed(1)} s]`);
  }
  for (const read of listenReads) {
    const t0 = Date.now();
    const name = read ? `Deno.listen, read ${read} B` : "Deno.listen, no read";
    const p = await startOther(
      `memory-deno-listen-${read}`,
      resolve(ROOT, "bench/experiments/deno_listen_holder.ts"),
      ["--read", String(read)],
    );
    try {
      runs.push(
        await measure(
          name,
          read
            ? `Deno.listen; one conn.read() pending per connection into its own ${read}-byte buffer`
            : "Deno.listen; accepted Deno.TcpConn objects kept, no read pending",
          p,
        ),
      );
    } finally {
      await stopServer(p.handle, 3000);
    }
    progress(`${name}: done [${((Date.now() - t0) / 1000).toFixed(1)} s]`);
  }
} finally {
  await cleanupAll();
}

const kb = (b: number) => num(b / 1024, 2);
const table = formatTable(
  ["server", "conns", "RSS KB/conn", "heapUsed KB/conn", "external KB/conn", "heapTotal KB/conn"],
  runs.map((r) => [
    r.server,
    String(r.connections),
    kb(r.perConnection.rssBytes),
    kb(r.perConnection.heapUsedBytes),
    kb(r.perConnection.externalBytes),
    kb(r.perConnection.heapTotalBytes),
  ]),
);
const k = runs[0];
/** Slab caches shown in the chart, with short labels. */
const KERNEL_BARS: [string, string][] = [
  ["TCP", "TCP sock"],
  ["sock_inode_cache", "socket inode"],
  ["dentry", "dentry"],
  ["filp", "file"],
  ["eventpoll_epi", "epoll item"],
  ["nf_conntrack", "conntrack"],
  ["proc_inode_cache", "/proc inode¹"],
];
/** Bytes charged to the sockets of both ends per connection, from ss skmem. */
const ssBytes = (r: MemoryRun) => {
  let sum = 0;
  for (const s of [r.ssServerSide, r.ssClientSide]) {
    if (s) sum += (s.r ?? 0) + (s.t ?? 0) + (s.f ?? 0) + (s.w ?? 0) + (s.o ?? 0) + (s.bl ?? 0);
  }
  return sum / r.connections;
};
const ss = (s: Record<string, number> | null) =>
  s
    ? `${s.sockets} sockets, r+t+f+w+o summed: ${
      (s.r ?? 0) + (s.t ?? 0) + (s.f ?? 0) +
      (s.w ?? 0) + (s.o ?? 0)
    } B`
    : "ss not available";
const slabRows = Object.entries(k.slabPerConnection).sort((a, b) => b[1] - a[1]).map((
  [cache, bytes],
) => [
  cache,
  String(bytes),
  String(k.slabObjectsPerConnection[cache]),
  String(k.slabObjectSize[cache]),
]);
const kernelTable = formatTable([
  "slab cache (ours run)",
  "bytes/conn",
  "objects/conn",
  "object size",
], [
  ...slabRows,
  ["all slab (/proc/meminfo Slab)", num(k.perConnection.kernelSlabBytes), ""],
  ["TCP buffers (/proc/net/sockstat mem)", num(k.perConnection.kernelTcpMemBytes), ""],
]);
console.log(table);
console.log();
console.log(kernelTable);
console.log(`\nss -tmn, server side: ${ss(k.ssServerSide)}`);
console.log(`ss -tmn, client side: ${ss(k.ssClientSide)}`);

const svg = sideBySide([
  barChartSvg({
    title: `Server memory per idle connection (${idle} held)`,
    subtitle: "delta after / before the connections, divided by their number",
    yLabel: "KB per connection",
    series: [{ name: "RSS" }, { name: "JS heapUsed" }, { name: "external" }],
    groups: runs.map((r) => ({
      label: r.server,
      values: [
        r.perConnection.rssBytes / 1024,
        r.perConnection.heapUsedBytes / 1024,
        r.perConnection.externalBytes / 1024,
      ],
    })),
    footnote: `heap after gc() (--expose-gc). ${machineLine(head.machine)}`,
    width: 760,
  }),
  barChartSvg({
    title: "Kernel memory per idle connection",
    subtitle: "slab growth over the ours run; a connection is 2 sockets on loopback",
    yLabel: "bytes per connection (both ends)",
    series: [{ name: "bytes" }],
    groups: [
      ...KERNEL_BARS.map(([cache, label]) => ({
        label,
        values: [k.slabPerConnection[cache] ?? 0],
      })),
      { label: "all slab", values: [k.perConnection.kernelSlabBytes], highlight: true },
      { label: "sockstat mem", values: [k.perConnection.kernelTcpMemBytes] },
      { label: "ss skmem", values: [ssBytes(k)] },
    ],
    footnote: "all slab: /proc/meminfo Slab delta. sockstat mem: /proc/net/sockstat TCP pages " +
      "(machine-wide, noisy). ss skmem: buffers\ncharged to these sockets. ¹ /proc inodes: " +
      "something reading /proc/PID/fd of a process holding the fds, not the socket itself.",
    width: 1000,
    format: (x) => x.toFixed(0),
  }),
]);
const files = writeResults("memory", {
  ...head,
  params: { idle, listenReads, settleMs, pageBytes: PAGE },
  table,
  kernelTable,
  results: runs,
}, svg);
console.error(`wrote ${files.join(", ")}`);
