/**
 * Facts about the machine a benchmark ran on, and small helpers for finding tools.
 *
 * @module
 */

/** Where a benchmark ran: recorded with every result file. */
export interface MachineInfo {
  /** CPU model name from /proc/cpuinfo. */
  cpuModel: string;
  /** Online CPUs, as `nproc` reports them (`navigator.hardwareConcurrency`). */
  nproc: number;
  /** Kernel release (`uname -r`). */
  kernel: string;
  /** Operating system name from /etc/os-release, when readable. */
  os: string | null;
  /** Deno, V8 and TypeScript versions of the runner. */
  deno: string;
  /** V8 version of the runner. */
  v8: string;
  /** TypeScript version of the runner. */
  typescript: string;
  /** Host name. */
  hostname: string;
  /** Total memory in bytes, from Deno.systemMemoryInfo(). */
  memoryBytes: number;
  /** 1, 5 and 15 minute load averages when the run started: a busy machine skews results. */
  loadavg: number[];
}

function readText(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

/** Collects {@link MachineInfo} for the current machine. */
export function machineInfo(): MachineInfo {
  const cpuinfo = readText("/proc/cpuinfo") ?? "";
  const model = cpuinfo.match(/^(?:model name|Hardware|cpu model)\s*:\s*(.+)$/m);
  const osRelease = readText("/etc/os-release") ?? "";
  const pretty = osRelease.match(/^PRETTY_NAME="?([^"\n]*)"?$/m);
  return {
    cpuModel: model ? model[1].trim() : "unknown",
    nproc: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    os: pretty ? pretty[1] : null,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    hostname: Deno.hostname(),
    memoryBytes: Deno.systemMemoryInfo().total,
    loadavg: Deno.loadavg(),
  };
}

/** Finds an executable on PATH, like `command -v`; returns its path or null. */
export function which(name: string): string | null {
  if (name.includes("/")) return isExecutable(name) ? name : null;
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    const path = `${dir || "."}/${name}`;
    if (isExecutable(path)) return path;
  }
  return null;
}

function isExecutable(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** True when `path` exists (file or directory). */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Builds a C anchor server with `cc -O2 -o BIN SRC ...libs`. Returns null
 * when it built, else why not (no source, no cc, or cc's first error line).
 */
export async function buildC(
  src: string,
  bin: string,
  libs: string[] = [],
): Promise<string | null> {
  if (!exists(src)) return `${src} not found`;
  const cc = which("cc");
  if (cc === null) return "cc is not on PATH";
  const out = await new Deno.Command(cc, {
    args: ["-O2", "-o", bin, src, ...libs],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (out.success) return null;
  return `cc failed to build ${src}: ${new TextDecoder().decode(out.stderr).trim().split("\n")[0]}`;
}
