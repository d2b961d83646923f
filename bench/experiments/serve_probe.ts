/**
 * `main.ts serve` exactly (same flags, same `serve()` from `serve.ts`), plus one SIGUSR2
 * listener the experiments need: it appends a JSON line with the reactor counters,
 * `Deno.memoryUsage()` and the open-connection count to the file named by `$SNAPSHOT_FILE`
 * (stdout when unset). Counters can then be differenced over exactly the measured window,
 * instead of being read once from the exit line, where they include start-up, connection
 * set-up and warm-up. Under `--v8-flags=--expose-gc` the heap is collected first, so
 * `heapUsed` is the live heap.
 *
 *   SNAPSHOT_FILE=/tmp/s.jsonl deno run -A bench/experiments/serve_probe.ts --app echo \
 *     --port 8080 --backend epoll --trigger level --max-events 1024 --log-level debug
 *
 * The snapshot protocol itself is in `snapshot.ts`.
 *
 * @module
 */

import { parseCommandLine } from "../../cli/args.ts";
import { Server, type ServerOptions } from "../../server/server.ts";
import { answerSnapshots } from "./snapshot.ts";

let server: Server | null = null;
// Capture the server that serve() builds, without changing serve().
const create = Server.create;
(Server as unknown as { create: (o: ServerOptions) => Promise<Server> }).create = async (
  opts: ServerOptions,
) => {
  const s = await create.call(Server, opts);
  server = s;
  return s;
};

answerSnapshots(() => ({
  connections: server?.connectionCount ?? 0,
  // The loop's counters (waits, events) and the connections' (bytesIn, from
  // which the experiments count requests).
  counters: server
    ? { ...server.reactor.counters.snapshot(), ...server.context.counters.snapshot() }
    : {},
}));

const cmd = parseCommandLine(["serve", ...Deno.args]);
if (cmd.command !== "serve") throw new Error("expected serve flags");
const { serve } = await import("../../cli/serve.ts");
Deno.exit(await serve(cmd));
