/**
 * reactor as a library: an epoll event loop for Deno through FFI, its
 * handlers, and the server that assembles them.
 *
 * ```ts
 * import { Server } from "./mod.ts";
 * const server = await Server.start({ app: "http", host: "127.0.0.1", port: 8080 });
 * Deno.addSignalListener("SIGTERM", () => server.shutdown(10_000));
 * await server.run();
 * ```
 *
 * Lower down, `Reactor` takes any fd and a `Handler`; `Connection` gives a
 * socket an output buffer with backpressure; a `Protocol` plugs into it.
 *
 * @module
 */

export * from "./reactor/mod.ts";
export { Acceptor } from "./handlers/accept.ts";
export {
  type CloseReason,
  Connection,
  type ConnectionLimits,
  DEFAULT_LIMITS,
  DEFAULT_TIMEOUTS,
  type Protocol,
  type TimeoutKind,
  type Timeouts,
} from "./handlers/connection.ts";
export { echoProtocol } from "./handlers/protocols/echo.ts";
export { HttpApp, type HttpOptions, type HttpReply } from "./handlers/protocols/http/http.ts";
export {
  HttpParser,
  type HttpParserLimits,
  type HttpParserSink,
} from "./handlers/protocols/http/http_parser.ts";
export {
  type AppName,
  APPS,
  type ProtocolFactory,
  Server,
  type ServerOptions,
} from "./server/server.ts";
export { SyscallError } from "./syscalls/errno.ts";
