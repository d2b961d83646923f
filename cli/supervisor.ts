/**
 * `--workers N`: N processes, each with its own Reactor, listening on one
 * port through SO_REUSEPORT (the kernel spreads connections across them).
 * This parent only supervises: it restarts a worker that dies (with a
 * back-off), passes SIGTERM/SIGINT to every worker, and exits 0 once all
 * have drained.
 *
 * @module
 */

import { getLogger } from "../log/mod.ts";
import type { ServeCommand } from "./args.ts";
import { SO_REUSEPORT, SOCK_CLOEXEC, SOCK_STREAM, SOL_SOCKET } from "../syscalls/constants.ts";
import { bind, close, socket } from "../syscalls/libc.ts";
import { encodeSockaddr } from "../syscalls/layout.ts";
import { check, localAddress, resolveHost, setIntOption } from "../syscalls/socket.ts";

const log = getLogger(["reactor", "supervisor"]);

/** Back-off after a crash: 100 ms doubling to 10 s; reset after a worker lived 30 s. */
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 10_000;
const HEALTHY_AFTER_MS = 30_000;

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

function workerArgs(argv: string[], id: number, port: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--workers" || a === "--port" || a === "--worker-id") {
      i++;
      continue;
    }
    if (a.startsWith("--workers=") || a.startsWith("--port=") || a.startsWith("--worker-id=")) {
      continue;
    }
    out.push(a);
  }
  return [...out, "--port", String(port), "--worker-id", String(id)];
}

interface Worker {
  id: number;
  child: Deno.ChildProcess | null;
  startedAt: number;
  backoffMs: number;
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
  }));
  const exits: Promise<void>[] = [];

  const start = (w: Worker) => {
    w.startedAt = Date.now();
    w.child = new Deno.Command(self.cmd, {
      args: [...self.args, ...workerArgs(serveArgs, w.id, port)],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    log.info("worker {id} started (pid {pid})", { id: w.id, pid: w.child.pid });
    exits[w.id] = watch(w, w.child);
  };

  const watch = async (w: Worker, child: Deno.ChildProcess) => {
    const status = await child.status;
    if (w.child !== child) return;
    w.child = null;
    if (stopping !== null) {
      if (status.code !== 0) failed = true;
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
  workers.forEach(start);
  // Each watch() resolves only when its worker exited during shutdown.
  for (;;) {
    await Promise.all(exits);
    if (stopping !== null && workers.every((w) => w.child === null)) break;
  }
  for (const [sig, fn] of listeners) Deno.removeSignalListener(sig, fn);
  if (reserved) close(reserved.fd);
  log.info("all workers stopped");
  return failed ? 1 : 0;
}
