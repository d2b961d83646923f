/**
 * Run the `wrk` HTTP load generator and parse its report.
 *
 * @module
 */

/** Socket errors counted by wrk during a run. */
export interface WrkErrors {
  /** Failed connection attempts. */
  connect: number;
  /** Read errors (connection reset, ...). */
  read: number;
  /** Write errors. */
  write: number;
  /** Requests that got no response within wrk's timeout (2 s by default). */
  timeout: number;
  /** Responses whose status was not 2xx or 3xx. */
  non2xx3xx: number;
}

/** The figures of one wrk report. */
export interface WrkResult {
  /** Completed requests (responses received): the "N requests in" line. */
  requests: number;
  /** Length of the run as wrk measured it, in seconds. */
  seconds: number;
  /** Bytes read from the server. */
  bytesRead: number;
  /** The "Requests/sec:" line. */
  rps: number;
  /** Mean latency in milliseconds, or null when wrk printed none. */
  latencyMeanMs: number | null;
  /** Maximum latency in milliseconds, or null when wrk printed none. */
  latencyMaxMs: number | null;
  /** Socket errors and non-2xx/3xx responses. */
  errors: WrkErrors;
  /** wrk's whole output (stdout then stderr), for logs and debugging. */
  raw: string;
}

/** Options of one wrk run. */
export interface WrkOptions {
  /** URL to load, e.g. `http://127.0.0.1:8080/`. */
  url: string;
  /** Open connections (`-c`). */
  connections: number;
  /** Run length in seconds (`-d`). */
  seconds: number;
  /** Client threads (`-t`); default 1. */
  threads?: number;
  /** Lua script (`-s`), e.g. the pipelining script. */
  script?: string;
  /** Extra environment for wrk (the pipeline script reads DEPTH). */
  env?: Record<string, string>;
  /** Path of the wrk executable; default `wrk` from PATH. */
  wrk?: string;
  /** Aborts the run (wrk is killed). */
  signal?: AbortSignal;
}

/** Converts a wrk duration such as `1.23ms`, `850.00us`, `2.01s` or `1.5m` to milliseconds. */
export function durationToMs(text: string): number | null {
  const m = text.match(/^([\d.]+)(us|ms|s|m|h)$/);
  if (!m) return null;
  const unit: Record<string, number> = { us: 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 };
  return Number((Number(m[1]) * unit[m[2]]).toPrecision(12));
}

/** Converts a wrk size such as `12.34MB` or `800B` to bytes. */
export function sizeToBytes(text: string): number {
  const m = text.match(/^([\d.]+)([KMGT]?B)$/);
  if (!m) return 0;
  const unit: Record<string, number> = {
    B: 1,
    KB: 1024,
    MB: 1024 ** 2,
    GB: 1024 ** 3,
    TB: 1024 ** 4,
  };
  return Math.round(Number(m[1]) * unit[m[2]]);
}

/**
 * Parses wrk's text report. Throws when the "N requests in" line is missing (wrk failed to
 * run, e.g. a bad URL or script).
 */
export function parseWrk(raw: string): WrkResult {
  const total = raw.match(/^\s*(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read/m);
  if (!total) throw new Error(`wrk printed no "requests in" line:\n${raw.trim()}`);
  const rps = raw.match(/^Requests\/sec:\s*([\d.]+)/m);
  const latency = raw.match(/^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)/m);
  const sock = raw.match(
    /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/,
  );
  const non2xx = raw.match(/Non-2xx or 3xx responses: (\d+)/);
  const seconds = (durationToMs(total[2]) ?? 0) / 1000;
  const requests = Number(total[1]);
  return {
    requests,
    seconds,
    bytesRead: sizeToBytes(total[3]),
    rps: rps ? Number(rps[1]) : (seconds > 0 ? requests / seconds : 0),
    latencyMeanMs: latency ? durationToMs(latency[1]) : null,
    latencyMaxMs: latency ? durationToMs(latency[3]) : null,
    errors: {
      connect: sock ? Number(sock[1]) : 0,
      read: sock ? Number(sock[2]) : 0,
      write: sock ? Number(sock[3]) : 0,
      timeout: sock ? Number(sock[4]) : 0,
      non2xx3xx: non2xx ? Number(non2xx[1]) : 0,
    },
    raw,
  };
}

/** Sum of all socket errors and non-2xx/3xx responses of a run. */
export function errorCount(e: WrkErrors): number {
  return e.connect + e.read + e.write + e.timeout + e.non2xx3xx;
}

/** The wrk command line for the given options (without the executable). */
export function wrkArgs(o: WrkOptions): string[] {
  const args = [`-t${o.threads ?? 1}`, `-c${o.connections}`, `-d${o.seconds}s`];
  if (o.script) args.push("-s", o.script);
  args.push(o.url);
  return args;
}

/** Runs wrk to completion and parses its report; throws if it fails or prints no figures. */
export async function runWrk(o: WrkOptions): Promise<WrkResult> {
  const out = await new Deno.Command(o.wrk ?? "wrk", {
    args: wrkArgs(o),
    env: o.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: o.signal,
  }).output();
  const dec = new TextDecoder();
  const raw = dec.decode(out.stdout) + dec.decode(out.stderr);
  if (!out.success && !/requests in/.test(raw)) {
    throw new Error(`wrk exited with code ${out.code}:\n${raw.trim()}`);
  }
  return parseWrk(raw);
}

/** `wrk -v` first line (e.g. "wrk 4.1.0 [epoll] ..."), or null when wrk is missing. */
export async function wrkVersion(wrk = "wrk"): Promise<string | null> {
  try {
    const out = await new Deno.Command(wrk, { args: ["-v"], stdout: "piped", stderr: "piped" })
      .output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return text.split("\n")[0].trim() || null;
  } catch {
    return null;
  }
}
