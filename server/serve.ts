/**
 * `serve()`: `Deno.serve`'s contract on the reactor. Code written for
 * `Deno.serve` runs unchanged with `serve` in its place:
 *
 * ```ts ignore
 * import { serve } from "./mod.ts";
 * const server = serve({ port: 8000 }, (req) => new Response(`Hello from ${new URL(req.url).pathname}`));
 * await server.finished;
 * ```
 *
 * The four call shapes of `Deno.serve` are accepted: `serve(handler)`,
 * `serve(options, handler)`, `serve({ ...options, handler })`, and an object
 * with a `fetch` method (a Hono app, a `deno serve` module's default export)
 * in place of the handler. It listens before it returns (`addr` is real
 * at once), and the process stays alive until the server finishes.
 *
 * @module
 */

import type { ReactorOptions } from "../reactor/reactor.ts";
import type { ConnectionLimits, Timeouts } from "../handlers/context.ts";
import {
  type FetchHandler,
  type FetchHandlerInfo,
  fetchProtocol,
} from "../handlers/protocols/http/app.ts";
import type { ProtocolDefinition } from "../handlers/protocols/mod.ts";
import type { StaticOptions } from "../handlers/protocols/http/static/static_files.ts";
import { formatAddress } from "../syscalls/socket.ts";
import { Server } from "./server.ts";

/** An object with a fetch method: a Hono app, `export default { fetch }`. */
export interface FetchApp {
  /** The handler. */
  fetch: FetchHandler;
}

/** Options of `serve`, as `Deno.ServeTcpOptions`, plus the reactor's own. */
export interface ServeOptions extends HttpServerOptions {
  /** Makes the response when the handler throws or rejects (default: 500). */
  onError?: (error: unknown) => Response | Promise<Response>;
  /** The handler, when not passed as an argument. */
  handler?: FetchHandler;
  /** Largest request body in bytes (413 above). Default: no limit, as Deno.serve. */
  maxBody?: number;
  /** Largest request header section (431 above). Default 16 KiB. */
  maxHeaderBytes?: number;
  /** Largest WebSocket message received, in bytes (close 1009 above). Default 16 MiB. */
  maxWebSocketMessage?: number;
  /**
   * A directory to serve: a GET or HEAD naming one of its files is answered
   * from it (sendfile, validators, ranges, sidecars: docs/http.md), anything
   * else goes to the handler. With files and no handler, the rest is 404/405.
   */
  files?: StaticOptions;
}

/** What `serve` returns, as `Deno.HttpServer`. */
export interface HttpServer extends AsyncDisposable {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /** Resolves once the server has stopped. */
  readonly finished: Promise<void>;
  /** Stops accepting, lets requests in flight finish, then stops. */
  shutdown(): Promise<void>;
  /** Keeps the process alive while serving (the default). */
  ref(): void;
  /** Lets the process exit while serving (not supported: the loop always holds it). */
  unref(): void;
  /** The underlying reactor server (connections, metrics). */
  readonly server: Server;
}

/** Re-exported for handler signatures. */
export type { FetchHandler, FetchHandlerInfo };

/** A handler, or an object whose `fetch` is one. */
export type HandlerLike = FetchHandler | FetchApp;

function handlerOf(h: HandlerLike | undefined, files?: StaticOptions): FetchHandler | null {
  if (h === undefined && files !== undefined) return null;
  if (typeof h === "function") return h;
  if (h !== undefined && typeof h === "object" && typeof h.fetch === "function") {
    return h.fetch.bind(h);
  }
  throw new TypeError("Cannot serve: a handler function (or an object with fetch) is required");
}

/**
 * Serves HTTP/1.1 on the reactor with a fetch handler, exactly as
 * `Deno.serve` does.
 *
 * @example Usage
 * ```ts ignore
 * const server = serve({ port: 0, onListen: ({ port }) => console.log(port) }, () => new Response("hi"));
 * await server.shutdown();
 * ```
 *
 * @throws {SyscallError} when the address cannot be listened on
 * @throws {TypeError} without a handler
 */
export function serve(handler: HandlerLike): HttpServer;
/** Serves with options and a handler. */
export function serve(options: ServeOptions, handler: HandlerLike): HttpServer;
/** Serves with the handler among the options (or only `files`). */
export function serve(
  options: ServeOptions & ({ handler: FetchHandler } | { files: StaticOptions }),
): HttpServer;
export function serve(
  a: HandlerLike | (ServeOptions & { handler?: FetchHandler }),
  b?: HandlerLike,
): HttpServer {
  let options: ServeOptions;
  let handler: FetchHandler | null;
  if (typeof a === "function" || (typeof (a as FetchApp).fetch === "function" && b === undefined)) {
    options = {};
    handler = handlerOf(a as HandlerLike);
  } else {
    options = a as ServeOptions;
    handler = handlerOf(b ?? options.handler, options.files);
  }
  return startHttpServer(
    options,
    fetchProtocol(handler, {
      onError: options.onError,
      maxBody: options.maxBody,
      maxHeaderBytes: options.maxHeaderBytes,
      maxWebSocketMessage: options.maxWebSocketMessage,
      files: options.files ?? null,
    }),
  );
}

/** What `startHttpServer` needs of serve()'s options (`serveNative` takes the same). */
export interface HttpServerOptions extends ReactorOptions {
  /** The port to listen on; 0 picks a free one. Default 8000. */
  port?: number;
  /** The address to listen on. Default "0.0.0.0". */
  hostname?: string;
  /** Aborting it shuts the server down. */
  signal?: AbortSignal;
  /** Called once listening (default: logs "Listening on http://HOST:PORT/" to stderr). */
  onListen?: (addr: Deno.NetAddr) => void;
  /** SO_REUSEPORT. */
  reusePort?: boolean;
  /** Connection timeouts. */
  timeouts?: Timeouts | null;
  /** Per-connection buffer limits. */
  limits?: ConnectionLimits;
  /** How long `shutdown()` lets requests in flight finish. Default 60 s. */
  shutdownTimeoutMs?: number;
}

/**
 * Listens (before it returns, as `Deno.serve`) with `protocol` and runs the
 * server: what `serve` and `serveNative` share: the `signal` option,
 * `onListen`, and the handle with `finished` and `shutdown()`.
 *
 * @throws {SyscallError} when the address cannot be listened on
 */
export function startHttpServer(
  options: HttpServerOptions,
  protocol: ProtocolDefinition,
): HttpServer {
  const hostname = options.hostname ?? "0.0.0.0";
  const server = Server.createSync({
    ...options,
    host: hostname,
    port: options.port ?? 8000,
    protocol,
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
    console.error(`Listening on http://${formatAddress(hostname, addr.port)}/`);
  }
  const stop = async () => {
    await shutdown();
    await finished;
  };
  return {
    addr,
    finished,
    server,
    shutdown: stop,
    ref() {},
    unref() {},
    [Symbol.asyncDispose]: stop,
  };
}
