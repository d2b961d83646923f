/**
 * `reactor serve`: start a server from parsed flags, log where it listens,
 * stop on SIGINT/SIGTERM, and turn set-up failures into one clear line.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { ServeCommand } from "./cli.ts";
import { setUpLogging } from "./logging.ts";
import { Server } from "./server.ts";
import { SyscallError } from "./syscalls/errno.ts";
import { formatAddress } from "./syscalls/socket.ts";

const log = getLogger(["reactor", "main"]);

const LISTEN_HINTS: Record<string, string> = {
  EADDRINUSE: "address already in use (is another server running on it?)",
  EADDRNOTAVAIL: "address not available on this machine",
  EACCES: "permission denied (ports below 1024 need privileges)",
};

/** Runs the server until a signal; returns the exit code. */
export async function serve(cmd: ServeCommand): Promise<number> {
  setUpLogging(cmd.logLevel, cmd.logFormat);
  let server: Server;
  try {
    server = await Server.create({
      app: cmd.app,
      host: cmd.host,
      port: cmd.port,
      backlog: cmd.backlog,
      backend: cmd.backend,
      maxEvents: cmd.maxEvents,
      edge: cmd.trigger === "edge",
    });
  } catch (e) {
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
  let stopping = false;
  const onSignal = (signal: Deno.Signal) => () => {
    if (stopping) return;
    stopping = true;
    log.info("{signal}: stopping", { signal });
    server.stop();
  };
  const signals: [Deno.Signal, () => void][] = [
    ["SIGINT", onSignal("SIGINT")],
    ["SIGTERM", onSignal("SIGTERM")],
  ];
  for (const [sig, fn] of signals) Deno.addSignalListener(sig, fn);
  log.info("{app} listening on {address} ({backend}, {trigger}-triggered, pid {pid})", {
    app: cmd.app,
    address: server.address,
    backend: cmd.backend,
    trigger: cmd.trigger,
    pid: Deno.pid,
  });
  await server.run();
  await server.stop();
  for (const [sig, fn] of signals) Deno.removeSignalListener(sig, fn);
  log.info("stopped");
  return 0;
}
