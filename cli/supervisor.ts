/**
 * `--workers N`: N processes, each with its own Reactor, listening on one
 * port through SO_REUSEPORT (the kernel spreads connections across them).
 * This parent only supervises: it restarts a worker that dies (with a
 * back-off), passes SIGTERM/SIGINT to every worker, and exits 0 once all
 * have drained.
 *
 * With `--metrics HOST:PORT` it also runs the admin listener (Deno.serve):
 * each worker is started with `--metrics 127.0.0.1:0`, binds its own admin
 * listener there and reports the port as one line on its stdout, which this
 * process reads; `GET /metrics` here scrapes every live worker and merges
 * the answers, plus the supervisor's own metrics, into one exposition.
 *
 * @module
 */

import { getLogger } from "../log/mod.ts";
import type { ServeCommand } from "./args.ts";
import { SO_REUSEPORT, SOCK_CLOEXEC, SOCK_STREAM, SOL_SOCKET } from "../syscalls/constants.ts";
import { bind, close, socket } from "../syscalls/libc.ts";
import { encodeSockaddr } from "../syscalls/layout.ts";
import { check, localAddress, resolveHost, setIntOption } from "../syscalls/socket.ts";
import {
  type AdminListener,
  mergeExpositions,
  parseAdminReport,
  scrape,
  startAdmin,
} from "../server/admin.ts";
import { prometheusText } from "../server/metrics.ts";
import { metricsFailure } from "./serve.ts";

const log = getLogger(["reactor", "supervisor"]);

/** Back-off after a crash: 100 ms doubling to 10 s; reset after a worker lived 30 s. */
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 10_000;
const HEALTHY_AFTER_MS = 30_000;
/** How long a scrape waits for one worker's metrics before skipping it. */
const SCRAPE_TIMEOUT_MS = 1000;

/** The command that starts this program again: the compiled binary, or deno run. */
function selfCommand(): { cmd: string; args: string[] } {
  const exe = Deno.execPath();
  // A `deno compile`d binary runs its embedded program by itself.
  if ((Deno.build as { standalone?: boolean }).standalone) return { cmd: exe, args: [] };
  const main = new URL("../main.ts", import.meta.url).pathname;
  return {
    cmd: exe,
    args: ["run", "--allow-ffi", "--allow-env", "--allow-read", "--allow-net", main],
  };
}

/**
 * With --port 0 every worker must get the same port: bind one (not listening)
 * SO_REUSEPORT socket here to reserve a free port and learn its number.
 */
function reservePort(host: string): { fd: number; port: number } {
  const addr = resolveHost(host);
  const fd = check("socket", socket(addr.family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  setIntOption(fd, SOL_SOCKET, SO_REUSEPORT, 1);
  const sa = encodeSockaddr(addr, 0);
  check("bind", bind(fd, sa, sa.length), `${host}:0`);
  return { fd, port: localAddress(fd).port };
}

/** Flags the supervisor sets for each worker itself (each takes a value). */
const WORKER_SET = ["--workers", "--port", "--worker-id", "--metrics"];

function workerArgs(argv: string[], id: number, port: number, metrics: boolean): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (WORKER_SET.includes(a)) {
      i++;
      continue;
    }
    if (WORKER_SET.some((flag) => a.startsWith(flag + "="))) continue;
    out.push(a);
  }
  out.push("--port", String(port), "--worker-id", String(id));
  // A worker's own admin listener, on a port it picks and reports on stdout.
  if (metrics) out.push("--metrics", "127.0.0.1:0");
  return out;
}

interface Worker {
  id: number;
  child: Deno.ChildProcess | null;
  startedAt: number;
  backoffMs: number;
  /** The port of its admin listener, once reported (with --metrics). */
  adminPort: number | null;
}

/** Copies a worker's stdout, taking out the line that reports its admin port. */
async function readReports(
  child: Deno.ChildProcess,
  onPort: (port: number) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  const pass = (line: string) => {
    const bytes = encoder.encode(line);
    try {
      for (let off = 0; off < bytes.length;) off += Deno.stdout.writeSync(bytes.subarray(off));
    } catch { /* our stdout is gone: drop it */ }
  };
  let pending = "";
  for await (const chunk of child.stdout) {
    pending += decoder.decode(chunk, { stream: true });
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      const line = pending.slice(0, nl + 1);
      pending = pending.slice(nl + 1);
      const port = parseAdminReport(line);
      if (port !== null) onPort(port);
      else pass(line);
    }
  }
  pending += decoder.decode();
  if (pending !== "") pass(pending);
}

/** Starts and watches the workers; returns the exit code. */
export async function supervise(cmd: ServeCommand): Promise<number> {
  const reserved = cmd.port === 0 ? reservePort(cmd.host) : null;
  const port = reserved?.port ?? cmd.port;
  const self = selfCommand();
  const serveArgs = Deno.args.slice(Deno.args.indexOf("serve"));
  let stopping: Deno.Signal | null = null;
  let failed = false;
  const workers: Worker[] = Array.from({ length: cmd.workers }, (_, id) => ({
    id,
    child: null,
    startedAt: 0,
    backoffMs: BACKOFF_MIN_MS,
    adminPort: null,
  }));
  const exits: Promise<void>[] = [];
  let restarts = 0;
  let scrapeErrors = 0;

  // GET /metrics of the admin listener: every live worker's, merged.
  const allMetrics = async (): Promise<string> => {
    const live = workers.filter((w) => w.child !== null && w.adminPort !== null);
    const texts = await Promise.all(live.map(async (w) => {
      try {
        return await scrape(w.adminPort!, SCRAPE_TIMEOUT_MS);
      } catch (e) {
        scrapeErrors++;
        log.warn("worker {id} metrics skipped: {error}", { id: w.id, error: (e as Error).message });
        return "";
      }
    }));
    const gauge = "gauge" as const;
    const counter = "counter" as const;
    const own = prometheusText([
      {
        name: "supervisor_workers",
        type: gauge,
        help: "Worker processes asked for.",
        value: cmd.workers,
      },
      {
        name: "supervisor_workers_running",
        type: gauge,
        help: "Worker processes running now.",
        value: workers.filter((w) => w.child !== null).length,
      },
      {
        name: "supervisor_worker_restarts_total",
        type: counter,
        help: "Workers restarted after dying.",
        value: restarts,
      },
      {
        name: "supervisor_scrape_errors_total",
        type: counter,
        help: "Worker metrics scrapes that failed or timed out (the worker was skipped).",
        value: scrapeErrors,
      },
    ]);
    return mergeExpositions([...texts, own]);
  };
  let admin: AdminListener | null = null;
  if (cmd.metrics !== null) {
    try {
      admin = startAdmin({
        ...cmd.metrics,
        metrics: allMetrics,
        draining: () => stopping !== null,
      });
    } catch (e) {
      if (reserved) close(reserved.fd);
      return metricsFailure(cmd.metrics, e);
    }
  }

  const start = (w: Worker) => {
    w.startedAt = Date.now();
    w.adminPort = null;
    const child = new Deno.Command(self.cmd, {
      args: [...self.args, ...workerArgs(serveArgs, w.id, port, admin !== null)],
      stdin: "null",
      stdout: admin !== null ? "piped" : "inherit",
      stderr: "inherit",
    }).spawn();
    w.child = child;
    log.info("worker {id} started (pid {pid})", { id: w.id, pid: child.pid });
    if (admin !== null) {
      readReports(child, (adminPort) => {
        if (w.child !== child) return;
        w.adminPort = adminPort;
        log.debug("worker {id} metrics on 127.0.0.1:{port}", { id: w.id, port: adminPort });
      }).catch((e) => log.warn("worker {id} stdout: {error}", { id: w.id, error: e.message }));
    }
    exits[w.id] = watch(w, child);
  };

  const watch = async (w: Worker, child: Deno.ChildProcess) => {
    const status = await child.status;
    if (w.child !== child) return;
    w.child = null;
    w.adminPort = null;
    if (stopping !== null) {
      // Killed by the very signal we passed on: it was still starting (no
      // handler installed yet, so nothing in flight). That is a clean stop.
      const byOurSignal = status.signal !== null && status.signal === stopping;
      if (status.code !== 0 && !byOurSignal) failed = true;
      log.info("worker {id} exited with {code}", { id: w.id, code: status.code });
      return;
    }
    const lived = Date.now() - w.startedAt;
    if (lived > HEALTHY_AFTER_MS) w.backoffMs = BACKOFF_MIN_MS;
    log.warn("worker {id} died ({how}) after {lived} ms; restarting in {ms} ms", {
      id: w.id,
      how: status.signal ? `signal ${status.signal}` : `exit ${status.code}`,
      lived,
      ms: w.backoffMs,
    });
    const delay = w.backoffMs;
    w.backoffMs = Math.min(w.backoffMs * 2, BACKOFF_MAX_MS);
    await new Promise((r) => setTimeout(r, delay));
    if (stopping === null) {
      restarts++;
      start(w);
      await exits[w.id];
    }
  };

  let firstSignalAt = 0;
  const onSignal = (signal: Deno.Signal) => () => {
    if (stopping !== null) {
      // The same Ctrl-C can arrive twice (group + task runner): only a later
      // second signal means "no more waiting".
      if (Date.now() - firstSignalAt < 1000) return;
      signal = "SIGKILL";
    } else {
      firstSignalAt = Date.now();
    }
    stopping = signal;
    log.info("{signal}: passing it to {n} workers", { signal, n: workers.length });
    for (const w of workers) {
      try {
        w.child?.kill(signal);
      } catch { /* already gone */ }
    }
  };
  const listeners: [Deno.Signal, () => void][] = [
    ["SIGINT", onSignal("SIGINT")],
    ["SIGTERM", onSignal("SIGTERM")],
  ];
  for (const [sig, fn] of listeners) Deno.addSignalListener(sig, fn);
  log.info("supervising {n} workers on {host}:{port}", { n: cmd.workers, host: cmd.host, port });
  if (admin !== null) {
    log.info("admin endpoint {url} (GET /metrics of every worker, GET /health)", {
      url: admin.url,
    });
  }
  workers.forEach(start);
  // Each watch() resolves only when its worker exited during shutdown.
  for (;;) {
    await Promise.all(exits);
    if (stopping !== null && workers.every((w) => w.child === null)) break;
  }
  await admin?.close();
  for (const [sig, fn] of listeners) Deno.removeSignalListener(sig, fn);
  if (reserved) close(reserved.fd);
  log.info("all workers stopped");
  return failed ? 1 : 0;
}
