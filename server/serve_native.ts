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

import {
  type NativeHandler,
  type NativeOptions,
  nativeProtocol,
  type Router,
} from "../handlers/protocols/http/native.ts";
import { type HttpServer, type HttpServerOptions, startHttpServer } from "./serve.ts";

/** Options of `serveNative`: those of `serve` that apply, plus `NativeOptions`. */
export interface ServeNativeOptions extends HttpServerOptions, NativeOptions {}

/** What `serveNative` returns: the handle `serve` returns. */
export type NativeServer = HttpServer;

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
  return startHttpServer(
    options,
    nativeProtocol(router, {
      maxBody: options.maxBody,
      maxHeaderBytes: options.maxHeaderBytes,
      files: options.files,
    }),
  );
}
