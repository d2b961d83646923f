/**
 * Start, probe and stop a server under test.
 *
 * The server command runs through `setsid sh -c 'exec CMD'`, so the server leads a new
 * session (and process group) whose id is its pid. Everything it spawns stays in that
 * session, which lets `proc.ts` measure all of it and {@link stopServer} kill all of it.
 * PORT is passed in the environment; stdout and stderr go to a log file.
 *
 * @module
 */

import { groupPids, type GroupSample, sampleGroup } from "./proc.ts";

/** How to start a server. */
export interface ServerSpec {
  /** Short name, used in messages and for the log file name. */
  name: string;
  /** Shell command (run by `sh -c 'exec CMD'`); it must listen on 127.0.0.1:$PORT. */
  cmd: string;
  /** TCP port; default: {@link freePort}. */
  port?: number;
  /** Working directory; default: the current one. */
  cwd?: string;
  /** Extra environment (PORT is always set). */
  env?: Record<string, string>;
  /** Directory for `<name>.log`; default: a new temporary directory. */
  logDir?: string;
  /** How long to wait for the port to accept connections; default 30 000 ms. */
  readyTimeoutMs?: number;
}

/** A running server, the leader of its own session. */
export interface ServerHandle {
  /** The spec's name. */
  name: string;
  /** The shell command that was run. */
  cmd: string;
  /** Pid of the session leader, which is also the session id and process group id. */
  pid: number;
  /** Port it listens on, on 127.0.0.1. */
  port: number;
  /** File holding the server's stdout and stderr. */
  logPath: string;
  /** The spawned leader process. */
  child: Deno.ChildProcess;
  /** Samples CPU ticks and RSS of every process of the server. */
  sample(): GroupSample;
}

/** What {@link stopServer} had to do. */
export interface StopReport {
  /** Processes of the session that got SIGTERM. */
  terminated: number;
  /** Processes still alive after the grace period that got SIGKILL. */
  killed: number;
  /** Pids still alive at the end (should be empty). */
  leftover: number[];
}

const live = new Set<ServerHandle>();

/** Quotes a string for POSIX sh. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The kernel's ephemeral port range (net.ipv4.ip_local_port_range), e.g. [32768, 60999]. */
export function ephemeralPortRange(): [number, number] {
  try {
    const [lo, hi] = Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range").trim()
      .split(/\s+/).map(Number);
    if (lo > 0 && hi >= lo) return [lo, hi];
  } catch {
    // not Linux, or /proc not mounted
  }
  return [32768, 60999];
}

/** True when 127.0.0.1:port can be bound right now. */
export function portIsFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

/**
 * A random free port below the ephemeral range, so the clients' own ephemeral ports
 * (wrk opens many connections) can never collide with the server's. Ports in `avoid` are
 * skipped (e.g. ones used earlier in the same run, which may linger in TIME_WAIT).
 */
export function freePort(avoid: Iterable<number> = []): number {
  const skip = new Set(avoid);
  const [lo] = ephemeralPortRange();
  const top = Math.min(lo, 30000) - 1;
  const bottom = Math.max(1024, Math.min(20000, top - 1000));
  for (let i = 0; i < 200; i++) {
    const port = bottom + Math.floor(Math.random() * (top - bottom + 1));
    if (!skip.has(port) && portIsFree(port)) return port;
  }
  throw new Error(`no free port found in ${bottom}-${top}`);
}

/** Resolves once 127.0.0.1:port accepts a TCP connection; rejects after `timeoutMs`. */
export async function waitForPort(
  port: number,
  timeoutMs = 30_000,
  exited?: Promise<Deno.CommandStatus>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let status: Deno.CommandStatus | undefined;
  exited?.then((s) => status = s);
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      // not listening yet
    }
    if (status) throw new Error(`exited with code ${status.code} before listening`);
    if (Date.now() > deadline) throw new Error(`did not listen on port ${port} in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The last `lines` lines of a text file, or "" when it cannot be read. */
export function tail(path: string, lines = 10): string {
  try {
    return Deno.readTextFileSync(path).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

/**
 * Starts a server in its own session and waits until its port accepts connections. On
 * failure the whole session is killed and the error message ends with the log's tail.
 */
export async function startServer(spec: ServerSpec): Promise<ServerHandle> {
  const port = spec.port ?? freePort();
  const logDir = spec.logDir ?? await Deno.makeTempDir({ prefix: "bench-logs-" });
  const logPath = `${logDir}/${spec.name.replace(/[^\w.-]/g, "_")}.log`;
  const script = `exec >${shellQuote(logPath)} 2>&1 </dev/null\nexec ${spec.cmd}`;
  // setsid(1) execs in place (keeping the pid) because a Deno child is not a group leader.
  const child = new Deno.Command("setsid", {
    args: ["sh", "-c", script],
    cwd: spec.cwd,
    env: { ...spec.env, PORT: String(port) },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const handle: ServerHandle = {
    name: spec.name,
    cmd: spec.cmd,
    pid: child.pid,
    port,
    logPath,
    child,
    sample: () => sampleGroup(child.pid),
  };
  live.add(handle);
  try {
    await waitForPort(port, spec.readyTimeoutMs ?? 30_000, child.status);
  } catch (e) {
    await stopServer(handle);
    const log = tail(logPath);
    throw new Error(
      `${(e as Error).message} (log: ${logPath})${log ? `\n${log}` : ""}`,
    );
  }
  return handle;
}

function signalAll(sid: number, signal: Deno.Signal): number {
  const pids = groupPids(sid);
  try {
    Deno.kill(-sid, signal); // the process group
  } catch {
    // group already gone
  }
  for (const pid of pids) {
    try {
      Deno.kill(pid, signal); // and anything that moved to another group of the session
    } catch {
      // already gone
    }
  }
  return pids.length;
}

async function waitEmpty(sid: number, ms: number): Promise<number[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const pids = groupPids(sid);
    if (pids.length === 0 || Date.now() > deadline) return pids;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Stops every process of the server's session: SIGTERM, then SIGKILL after `graceMs`
 * (default 2000), and reaps the leader. Safe to call twice.
 */
export async function stopServer(handle: ServerHandle, graceMs = 2000): Promise<StopReport> {
  live.delete(handle);
  const terminated = signalAll(handle.pid, "SIGTERM");
  let leftover = await waitEmpty(handle.pid, graceMs);
  let killed = 0;
  if (leftover.length) {
    killed = signalAll(handle.pid, "SIGKILL");
    leftover = await waitEmpty(handle.pid, 2000);
  }
  await handle.child.status;
  return { terminated, killed, leftover };
}

/** Stops every server started by {@link startServer} and not stopped yet (for Ctrl-C). */
export async function stopAllServers(): Promise<void> {
  await Promise.all([...live].map((h) => stopServer(h, 500)));
}

/** A response read by {@link httpGet}. */
export interface SimpleResponse {
  /** Status code, 0 when no status line arrived. */
  status: number;
  /** Lower-cased header names to values. */
  headers: Record<string, string>;
  /** Body text (Content-Length bytes, or whatever arrived before the timeout/close). */
  body: string;
}

/** A response read by {@link httpGetBytes}: the body as it came, for binary files. */
export interface BytesResponse {
  /** Status code, 0 when no status line arrived. */
  status: number;
  /** Lower-cased header names to values. */
  headers: Record<string, string>;
  /** Body bytes (Content-Length bytes, or whatever arrived before the timeout/close). */
  body: Uint8Array;
}

const CRLFCRLF = [13, 10, 13, 10];
const CHUNKED_END = [48, 13, 10, 13, 10]; // "0\r\n\r\n"

function indexOfSeq(buf: Uint8Array, seq: number[], from = 0): number {
  outer: for (let i = from; i + seq.length <= buf.length; i++) {
    for (let j = 0; j < seq.length; j++) if (buf[i + j] !== seq[j]) continue outer;
    return i;
  }
  return -1;
}

function endsWithSeq(buf: Uint8Array, seq: number[]): boolean {
  return buf.length >= seq.length && indexOfSeq(buf, seq, buf.length - seq.length) >= 0;
}

/**
 * One HTTP/1.1 GET over a fresh TCP connection, without fetch's connection pool or proxy
 * settings, keeping the body as bytes: used to check that a server answers correctly (e.g.
 * serves a binary file whole) before loading it.
 */
export async function httpGetBytes(
  port: number,
  path = "/",
  timeoutMs = 5000,
): Promise<BytesResponse> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), timeoutMs);
  let data = new Uint8Array(65536);
  let size = 0;
  let end = -1;
  let want = -1; // whole response length once Content-Length is known
  let chunked = false;
  try {
    await conn.write(
      new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`),
    );
    for (;;) {
      if (end < 0) {
        end = indexOfSeq(data.subarray(0, size), CRLFCRLF, 0);
        if (end >= 0) {
          const head = new TextDecoder("latin1").decode(data.subarray(0, end));
          const len = head.match(/^content-length:\s*(\d+)/im);
          if (len) want = end + 4 + Number(len[1]);
          chunked = /^transfer-encoding:\s*chunked/im.test(head);
        }
      }
      if (want >= 0 && size >= want) break;
      if (chunked && endsWithSeq(data.subarray(0, size), CHUNKED_END)) break;
      if (size === data.length) {
        const bigger = new Uint8Array(Math.max(data.length * 2, want));
        bigger.set(data);
        data = bigger;
      }
      const n = await conn.read(data.subarray(size));
      if (n === null) break;
      size += n;
    }
  } catch {
    // closed by the timer or the peer: parse what arrived
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // already closed by the timer
    }
  }
  const bytes = data.subarray(0, size);
  if (end < 0) end = indexOfSeq(bytes, CRLFCRLF);
  const head = new TextDecoder("latin1").decode(end >= 0 ? bytes.subarray(0, end) : bytes);
  const [statusLine, ...lines] = head.split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  let body = end >= 0 ? bytes.subarray(end + 4) : new Uint8Array(0);
  if (headers["content-length"]) body = body.subarray(0, Number(headers["content-length"]));
  return {
    status: Number(statusLine.match(/^HTTP\/1\.[01] (\d{3})/)?.[1] ?? 0),
    headers,
    body: body.slice(),
  };
}

/**
 * One HTTP/1.1 GET over a fresh TCP connection, without fetch's connection pool or proxy
 * settings: used to check that a server answers correctly before loading it.
 */
export async function httpGet(port: number, path = "/", timeoutMs = 5000): Promise<SimpleResponse> {
  const res = await httpGetBytes(port, path, timeoutMs);
  return { ...res, body: new TextDecoder().decode(res.body) };
}
