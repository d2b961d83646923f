/**
 * A tiny server on Deno's own sockets (`Deno.listen`) that only holds connections, for the
 * memory experiment: what does an idle connection cost when Deno's runtime (tokio, resources,
 * promises) owns it instead of our reactor?
 *
 *   deno run -A --v8-flags=--expose-gc bench/experiments/deno_listen_holder.ts [--read BYTES]
 *
 * Listens on 127.0.0.1:$PORT. `--read 0` (default) accepts and keeps the `Deno.TcpConn`
 * objects; `--read N` also keeps one `conn.read()` pending per connection into its own N-byte
 * buffer, as an echo or HTTP server on `Deno.listen` would (the anchor server in
 * `bench/anchors/deno_listen.ts` uses 64 KiB). Whatever arrives is echoed back.
 *
 * Speaks the experiments' snapshot protocol: on SIGUSR2 it runs gc() when exposed and appends
 * `{connections, memory}` as a JSON line to `$SNAPSHOT_FILE`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { answerSnapshots } from "./snapshot.ts";
import { numberFlag, orExit } from "../lib/flags.ts";

const { values: v } = orExit("deno_listen_holder", () =>
  parseArgs({
    args: Deno.args,
    options: { read: { type: "string", default: "0" } },
    strict: true,
  }));
const readBytes = numberFlag("deno_listen_holder", "read", v.read!, { integer: true });
const port = Number(Deno.env.get("PORT") ?? "8080");
const conns = new Set<Deno.TcpConn>();
answerSnapshots(() => ({ connections: conns.size, counters: {} }));
const stop = () => {
  for (const c of conns) c.close();
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);

async function pump(conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(readBytes);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      for (let off = 0; off < n;) off += await conn.write(buf.subarray(off, n));
    }
  } catch {
    // reset by the peer
  }
  conns.delete(conn);
  try {
    conn.close();
  } catch {
    // already closed
  }
}

const listener = Deno.listen({ hostname: "127.0.0.1", port });
console.error(`deno_listen_holder on 127.0.0.1:${port}, read buffer ${readBytes} B`);
for await (const conn of listener) {
  conns.add(conn);
  if (readBytes > 0) pump(conn);
}
