/**
 * `reactor serve`: start a server (or a supervisor of worker processes) from
 * parsed flags, log where it listens, drain gracefully on SIGINT/SIGTERM, and
 * turn set-up failures into one clear line.
 *
 * @module
 */

import { getLogger } from "../log/mod.ts";
import type { ServeCommand } from "./args.ts";
import { setUpLogging } from "../log/mod.ts";
import { Server } from "../server/server.ts";
import { DEFAULT_LIMITS } from "../handlers/context.ts";
import { loadModule, ModuleError } from "./module.ts";
import { fetchProtocol } from "../handlers/protocols/http/app.ts";
import { SyscallError } from "../syscalls/errno.ts";
import { IoUringUnavailableError } from "../reactor/io_uring.ts";
import type { Reactor } from "../reactor/reactor.ts";
import {
  type AdminListener,
  listenErrorCode,
  reportAdminPort,
  startAdmin,
} from "../server/admin.ts";
import { formatAddress, openFileLimit, setOpenFileLimit } from "../syscalls/socket.ts";

const log = getLogger(["reactor", "main"]);

const LISTEN_HINTS: Record<string, string> = {
  EADDRINUSE: "address already in use (is another server running on it?)",
  EADDRNOTAVAIL: "address not available on this machine",
  EACCES: "permission denied (ports below 1024 need privileges)",
};

/** Raises the soft open-files limit to the hard one: every connection is an fd. */
function raiseOpenFileLimit(): void {
  try {
    const { soft, hard } = openFileLimit();
    if (soft < hard) setOpenFileLimit(hard);
    log.info("open files limit: soft {soft} -> {now}, hard {hard}", {
      soft,
      now: openFileLimit().soft,
      hard,
    });
  } catch (e) {
    log.warn("could not raise the open files limit: {error}", { error: (e as Error).message });
  }
}

/** Runs the server (or the workers) until a signal; returns the exit code. */
export async function serve(cmd: ServeCommand): Promise<number> {
  setUpLogging(cmd.logLevel, cmd.logFormat);
  if (cmd.workers > 1 && cmd.workerId === null) {
    const { supervise } = await import("./supervisor.ts");
    return supervise(cmd);
  }
  let server: Server;
  try {
    const appOptions = {
      maxBody: cmd.protocolOptions.maxBody as number | undefined,
      maxHeaderBytes: cmd.protocolOptions.maxHeaderBytes as number | undefined,
      maxWebSocketMessage: cmd.protocolOptions.maxWebSocketMessage as number | undefined,
      accessLog: cmd.accessLog,
      files: cmd.files,
    };
    const protocol = cmd.module !== null
      ? await loadModule(cmd.module, appOptions)
      : cmd.files !== null
      ? fetchProtocol(null, appOptions)
      : undefined;
    server = await Server.create({
      app: cmd.app,
      protocol,
      protocolOptions: cmd.protocolOptions,
      host: cmd.host,
      port: cmd.port,
      backlog: cmd.backlog,
      backend: cmd.backend,
      batchWaitUs: cmd.batchWaitUs,
      maxEvents: cmd.maxEvents,
      edge: cmd.trigger === "auto" ? "auto" : cmd.trigger === "edge",
      reusePort: cmd.workerId !== null,
      worker: cmd.workerId ?? undefined,
      maxConnections: cmd.maxConnections,
      timeouts: {
        idleMs: cmd.idleTimeoutMs,
        requestMs: cmd.headerTimeoutMs,
        writeMs: cmd.writeTimeoutMs,
      },
      limits: { ...DEFAULT_LIMITS, maxOutputBytes: cmd.maxOutputBytes },
    });
  } catch (e) {
    return setUpFailure(cmd, e);
  }
  // --metrics: the admin listener. In a worker (started by the supervisor
  // with --metrics 127.0.0.1:0) its port goes to the supervisor on stdout.
  let admin: AdminListener | null = null;
  let stopping: Promise<unknown> | null = null;
  if (cmd.metrics !== null) {
    try {
      admin = startAdmin({
        ...cmd.metrics,
        metrics: () => server.metrics(),
        draining: () => stopping !== null,
      });
    } catch (e) {
      await server.stop();
      return metricsFailure(cmd.metrics, e);
    }
    if (cmd.workerId !== null) reportAdminPort(admin.port);
  }
  raiseOpenFileLimit();
  let firstSignalAt = 0;
  const onSignal = (signal: Deno.Signal) => () => {
    if (stopping !== null) {
      // Ctrl-C under `deno task` arrives twice (the terminal signals the
      // whole group, and the task runner forwards it): only a second signal
      // sent on purpose, later, cuts the drain short.
      if (Date.now() - firstSignalAt < 1000) return;
      log.warn("{signal} again: stopping now", { signal });
      server.stop();
      return;
    }
    firstSignalAt = Date.now();
    log.info("{signal}: draining, at most {s} s", { signal, s: cmd.shutdownTimeoutMs / 1000 });
    stopping = server.shutdown(cmd.shutdownTimeoutMs);
  };
  const listeners: [Deno.Signal, () => void][] = [
    ["SIGINT", onSignal("SIGINT")],
    ["SIGTERM", onSignal("SIGTERM")],
    // Counters on demand (SIGUSR1 would start Deno's inspector).
    ["SIGUSR2", () => log.info("stats {stats}", { stats: server.stats() })],
  ];
  for (const [sig, fn] of listeners) Deno.addSignalListener(sig, fn);
  if (cmd.statsIntervalMs > 0) {
    const tick = () => {
      log.info("stats {stats}", { stats: server.stats() });
      server.reactor.resetTimer(timer, cmd.statsIntervalMs);
    };
    const timer = server.reactor.setTimer(cmd.statsIntervalMs, tick);
  }
  log.info("{app} listening on {address} ({backend}, {trigger}-triggered, pid {pid}{worker})", {
    app: cmd.module !== null
      ? `--module ${cmd.module}`
      : cmd.files !== null
      ? `--root ${cmd.files.root}`
      : cmd.app,
    address: server.address,
    backend: backendDescription(server.reactor),
    trigger: server.reactor.edge ? "edge" : "level",
    pid: Deno.pid,
    worker: cmd.workerId === null ? "" : `, worker ${cmd.workerId}`,
  });
  if (admin !== null && cmd.workerId === null) {
    log.info("admin endpoint {url} (GET /metrics, GET /health)", { url: admin.url });
  } else if (admin !== null) {
    log.debug("worker {id} admin endpoint {url}", { id: cmd.workerId, url: admin.url });
  }
  await server.run();
  await (stopping ?? server.stop());
  await admin?.close();
  log.debug("final stats {stats}", { stats: server.stats() });
  for (const [sig, fn] of listeners) Deno.removeSignalListener(sig, fn);
  log.info("stopped");
  return 0;
}

/**
 * The admin address of --metrics could not be listened on: one line, exit
 * code 1 (as for the main port).
 */
export function metricsFailure(metrics: { host: string; port: number }, e: unknown): number {
  const code = listenErrorCode(e);
  const why = code === null ? (e as Error).message : LISTEN_HINTS[code] ?? code;
  console.error(
    `reactor: cannot listen on ${formatAddress(metrics.host, metrics.port)} (--metrics): ${why}`,
  );
  return 1;
}

function setUpFailure(cmd: ServeCommand, e: unknown): number {
  if (e instanceof IoUringUnavailableError) {
    console.error(`reactor: --backend io_uring: ${e.message}`);
    return 2;
  }
  if (e instanceof ModuleError) {
    console.error(`reactor: ${e.message}`);
    return 2;
  }
  if (e instanceof SyscallError && (e.call === "bind" || e.call === "listen")) {
    const why = LISTEN_HINTS[e.code] ?? e.code;
    console.error(`reactor: cannot listen on ${formatAddress(cmd.host, cmd.port)}: ${why}`);
    return 1;
  }
  if (e instanceof SyscallError) {
    console.error(`reactor: ${e.message}`);
    return 1;
  }
  if (e instanceof Error && e.message.startsWith("not an IP address")) {
    console.error(`reactor: --host ${e.message}`);
    return 2;
  }
  throw e;
}

/** The backend's name, and the batched wait when one is on. */
function backendDescription(reactor: Reactor): string {
  const name = reactor.backend.name;
  return reactor.batchWaitUs > 0 ? `${name}, batched waits ${reactor.batchWaitUs} µs` : name;
}
