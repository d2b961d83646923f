/**
 * "Hello, World!" on `/` (text/plain) through the native API: a Router and
 * serveNative. For the compare runs beside the C server and the built-in
 * routes:
 *
 * ```sh
 * deno run -A bench/apps/native_hello.ts --port 8000 [--backend io_uring] [--batch-wait 100]
 * ../shared/bench/compare c 'native=deno run -A bench/apps/native_hello.ts --port $PORT' \
 *   'builtin=deno run -A main.ts serve --port $PORT --log-level warning'
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Router, serveNative } from "../../mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: "8000" },
    host: { type: "string" },
    backend: { type: "string", default: "epoll" },
    "batch-wait": { type: "string", default: "0" },
  },
});

const router = new Router().get("/", (_req, res) => {
  res.header("Content-Type", "text/plain").text("Hello, World!");
});

const server = serveNative({
  port: Number(values.port),
  hostname: values.host ?? "127.0.0.1",
  backend: values.backend as "epoll" | "io_uring" | "auto",
  batchWaitUs: Number(values["batch-wait"]),
  onListen: ({ hostname, port }) => console.error(`native_hello on http://${hostname}:${port}/`),
}, router);
Deno.addSignalListener("SIGTERM", () => server.shutdown());
Deno.addSignalListener("SIGINT", () => server.shutdown());
await server.finished;
