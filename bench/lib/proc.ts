/**
 * CPU time and memory of a group of Linux processes, read from /proc.
 *
 * A benchmarked server is started as the leader of its own session (see `server.ts`), so
 * "the server" is every process whose session id is the leader's pid: helper processes,
 * workers and shells included. CPU time of each process covers all of its threads.
 *
 * @module
 */

/** Which id of /proc/<pid>/stat selects the processes of a group. */
export type GroupKind = "session" | "pgrp";

/** The fields of /proc/<pid>/stat that the benchmarks use. Times are in clock ticks. */
export interface ProcStat {
  /** Process id. */
  pid: number;
  /** Executable name (the `comm` field, without parentheses). */
  comm: string;
  /** One-letter state: R running, S sleeping, Z zombie, ... */
  state: string;
  /** Parent process id. */
  ppid: number;
  /** Process group id. */
  pgrp: number;
  /** Session id. */
  session: number;
  /** User-mode CPU time of all threads, in clock ticks. */
  utime: number;
  /** Kernel-mode CPU time of all threads, in clock ticks. */
  stime: number;
  /** User-mode CPU time of waited-for children, in clock ticks. */
  cutime: number;
  /** Kernel-mode CPU time of waited-for children, in clock ticks. */
  cstime: number;
}

/** CPU time and memory of a group of processes at one instant. */
export interface GroupSample {
  /** Pids of the processes found in the group. */
  pids: number[];
  /**
   * utime + stime + cutime + cstime summed over the group, in clock ticks. Children's
   * times are included so that a process exiting between two samples does not make its
   * CPU time vanish (it moves into its parent's cutime/cstime).
   */
  cpuTicks: number;
  /** VmRSS summed over the group, in bytes. */
  rssBytes: number;
  /** VmHWM (peak resident set) summed over the group, in bytes. */
  hwmBytes: number;
}

let clockTicks: number | undefined;

/**
 * Clock ticks per second (`getconf CLK_TCK`, almost always 100), the unit of the CPU times
 * in /proc/<pid>/stat. The value is cached after the first call.
 */
export function clockTicksPerSecond(): number {
  if (clockTicks !== undefined) return clockTicks;
  let hz = 100;
  try {
    const out = new Deno.Command("getconf", { args: ["CLK_TCK"], stderr: "null" }).outputSync();
    const n = Number(new TextDecoder().decode(out.stdout).trim());
    if (out.success && Number.isFinite(n) && n > 0) hz = n;
  } catch {
    // getconf missing: Linux has used 100 on every mainstream architecture for decades
  }
  clockTicks = hz;
  return hz;
}

/**
 * Parses the text of /proc/<pid>/stat. The command name may contain spaces and
 * parentheses, so the fields are split after the last ")".
 */
export function parseStat(text: string): ProcStat {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  const f = text.slice(close + 2).trim().split(" ");
  // f[0] is field 3 (state) of proc(5); utime is field 14, so f[11].
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    state: f[0],
    ppid: Number(f[1]),
    pgrp: Number(f[2]),
    session: Number(f[3]),
    utime: Number(f[11]),
    stime: Number(f[12]),
    cutime: Number(f[13]),
    cstime: Number(f[14]),
  };
}

/** Reads /proc/<pid>/stat, or returns null when the process is gone. */
export function readStat(pid: number): ProcStat | null {
  try {
    return parseStat(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return null;
  }
}

/** Stats of every process whose session id (or process group id) is `id`. */
export function groupStats(id: number, kind: GroupKind = "session"): ProcStat[] {
  const stats: ProcStat[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const st = readStat(Number(entry.name));
    if (st && (kind === "session" ? st.session : st.pgrp) === id) stats.push(st);
  }
  return stats;
}

/** Pids of the live processes (zombies excluded) of a session or process group. */
export function groupPids(id: number, kind: GroupKind = "session"): number[] {
  return groupStats(id, kind).filter((s) => s.state !== "Z").map((s) => s.pid);
}

/** Reads a "Name:   123 kB" line of /proc/<pid>/status in bytes; 0 when absent or gone. */
export function statusBytes(pid: number, field: string): number {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = text.match(new RegExp(`^${field}:\\s+(\\d+)\\s*kB`, "m"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Samples CPU ticks, RSS and peak RSS of every process of a session or process group. */
export function sampleGroup(id: number, kind: GroupKind = "session"): GroupSample {
  const stats = groupStats(id, kind);
  let cpuTicks = 0;
  let rssBytes = 0;
  let hwmBytes = 0;
  for (const s of stats) {
    cpuTicks += s.utime + s.stime + s.cutime + s.cstime;
    rssBytes += statusBytes(s.pid, "VmRSS");
    hwmBytes += statusBytes(s.pid, "VmHWM");
  }
  return { pids: stats.map((s) => s.pid), cpuTicks, rssBytes, hwmBytes };
}

/** Total CPU ticks (user + system, children included) of a session or process group. */
export function groupCpuTicks(id: number, kind: GroupKind = "session"): number {
  let sum = 0;
  for (const s of groupStats(id, kind)) sum += s.utime + s.stime + s.cutime + s.cstime;
  return sum;
}

/** Converts a CPU tick count to seconds. */
export function ticksToSeconds(ticks: number): number {
  return ticks / clockTicksPerSecond();
}

/** Machine-wide CPU time from the first line of /proc/stat, in clock ticks, all CPUs summed. */
export interface SystemCpu {
  /** Time spent running anything: user, nice, system, irq, softirq and steal. */
  busy: number;
  /** Time the hypervisor ran something else while a CPU wanted to run (VMs only). */
  steal: number;
  /** busy + idle + iowait. */
  total: number;
}

/** Reads machine-wide CPU ticks; the difference of two samples tells how busy the machine was. */
export function systemCpu(): SystemCpu {
  const line = Deno.readTextFileSync("/proc/stat").split("\n", 1)[0];
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/)
    .slice(1).map(Number);
  const stolen = steal || 0;
  const busy = user + nice + system + (irq || 0) + (softirq || 0) + stolen;
  return { busy, steal: stolen, total: busy + idle + (iowait || 0) };
}

/** Parses `perf stat -x ';'` output into counts by event name (counts perf could not take are left out). */
export function parsePerfStat(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const f = line.split(";");
    if (f.length < 3 || !/^\d+$/.test(f[0])) continue;
    out[f[2]] = Number(f[0]);
  }
  return out;
}
