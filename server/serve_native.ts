/**
 * `serveNative()`: a `Router` of native handlers on its own server, shaped
 * like `serve()`: it listens before it returns (`addr` is real at once) and
 * the process stays alive until the server finishes.
 *
 * ```ts ignore
 * import { Router, serveNative } from "./mod.ts";
 * const router = new Router().get("/", (_req, res) => res.text("Hello, World!"));
 * const server = serveNative({ port: 8000 }, router);
 * await server.finished;
 * ```
 *
 * (It lives in `server/` because it assembles a `Server`; the API itself is
 * in `handlers/protocols/http/native.ts`.)
 *
 * @module
 */

import type { ReactorOptions } from "../reactor/reactor.ts";
import type { ConnectionLimits, Timeouts } from "../handlers/context.ts";
import {
  type NativeHandler,
  type NativeOptions,
  nativeProtocol,
  type Router,
} from "../handlers/protocols/http/native.ts";
import { Server } from "./server.ts";

/** Options of `serveNative`: those of `serve` that apply, plus `NativeOptions`. */
export interface ServeNativeOptions extends ReactorOptions, NativeOptions {
  /** The port to listen on; 0 picks a free one. Default 8000 (as `serve`). */
  port?: number;
  /** The address to listen on. Default "0.0.0.0" (as `serve`). */
  hostname?: string;
  /** Aborting it shuts the server down. */
  signal?: AbortSignal;
  /** Called once listening (default: logs "Listening on http://HOST:PORT/" to stderr). */
  onListen?: (addr: Deno.NetAddr) => void;
  /** SO_REUSEPORT. */
  reusePort?: boolean;
  /** Connection timeouts. Default: idle 60 s, request 10 s, write 30 s. */
  timeouts?: Timeouts | null;
  /** Per-connection buffer limits. */
  limits?: ConnectionLimits;
  /** How long `shutdown()` lets requests in flight finish. Default 60 s. */
  shutdownTimeoutMs?: number;
}

/** What `serveNative` returns. */
export interface NativeServer extends AsyncDisposable {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /** Resolves once the server has stopped. */
  readonly finished: Promise<void>;
  /** Stops accepting, lets requests in flight finish, then stops. */
  shutdown(): Promise<void>;
  /** The underlying reactor server (connections, metrics). */
  readonly server: Server;
}

/**
 * Serves `router`'s native handlers over HTTP/1.1.
 *
 * @example Usage
 * ```ts ignore
 * const router = new Router().get("/", (_req, res) => res.text("hi"));
 * const server = serveNative({ port: 0, onListen: ({ port }) => console.log(port) }, router);
 * await server.shutdown();
 * ```
 *
 * @throws {SyscallError} when the address cannot be listened on
 */
export function serveNative(
  options: ServeNativeOptions,
  router: Router<NativeHandler>,
): NativeServer {
  const hostname = options.hostname ?? "0.0.0.0";
  const server = Server.createSync({
    ...options,
    host: hostname,
    port: options.port ?? 8000,
    protocol: nativeProtocol(router, {
      maxBody: options.maxBody,
      maxHeaderBytes: options.maxHeaderBytes,
    }),
  });
  const addr: Deno.NetAddr = { hostname, port: server.port, transport: "tcp" };
  let shuttingDown: Promise<void> | null = null;
  const shutdown = () =>
    shuttingDown ??= server.shutdown(options.shutdownTimeoutMs ?? 60_000).then(() => {});
  const finished = server.run().then(async () => {
    await (shuttingDown ?? server.stop());
  });
  options.signal?.addEventListener("abort", () => shutdown(), { once: true });
  if (options.signal?.aborted) shutdown();
  if (options.onListen) options.onListen(addr);
  else {
    console.error(
      `Listening on http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${addr.port}/`,
    );
  }
  return {
    addr,
    finished,
    server,
    shutdown: async () => {
      await shutdown();
      await finished;
    },
    async [Symbol.asyncDispose]() {
      await shutdown();
      await finished;
    },
  };
}
