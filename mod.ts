/**
 * reactor as a library: an epoll event loop for Deno through FFI, the
 * connection layer on top of it, the protocols, and the server that
 * assembles them.
 *
 * Serve a protocol of the registry:
 *
 * ```ts ignore
 * import { Server } from "./mod.ts";
 * const server = await Server.start({ app: "http", port: 8080 });
 * Deno.addSignalListener("SIGTERM", () => server.shutdown(10_000));
 * await server.run();
 * ```
 *
 * Or your own, one `Protocol` object per connection:
 *
 * ```ts ignore
 * import { type Connection, Server } from "./mod.ts";
 * const server = await Server.start({
 *   port: 9000,
 *   protocol: () => ({
 *     data(conn: Connection, data: Uint8Array, start: number, end: number) {
 *       conn.write(data, start, end); // echo
 *     },
 *   }),
 * });
 * ```
 *
 * Lower down, `Reactor` takes any fd and a `Handler` with an `Interest`;
 * `Connection` gives a socket an output buffer with backpressure events; a
 * `Protocol` plugs into it.
 *
 * @module
 */

export * from "./reactor/mod.ts";
export { Acceptor } from "./handlers/accept.ts";
export {
  type CloseListener,
  type CloseReason,
  Connection,
  type FileSource,
  LINGER_MS,
  type Protocol,
  type TimeoutKind,
} from "./handlers/connection.ts";
export {
  ConnectionContext,
  type ConnectionContextOptions,
  ConnectionCounters,
  type ConnectionLimits,
  DEFAULT_LIMITS,
  DEFAULT_TIMEOUTS,
  type Timeouts,
} from "./handlers/context.ts";
export { OutputBuffer } from "./handlers/output_buffer.ts";
export { type StaticOptions } from "./handlers/protocols/http/static/static_files.ts";
export {
  findProtocol,
  type FlagKind,
  type FlagSpec,
  type Metric,
  PROMETHEUS_TEXT_TYPE,
  type ProtocolDefinition,
  type ProtocolInstance,
  PROTOCOLS,
  type ProtocolSetup,
} from "./handlers/protocols/mod.ts";
export { echo, echoProtocol } from "./handlers/protocols/echo.ts";
export { http, HttpApp, type HttpOptions, type HttpReply } from "./handlers/protocols/http/http.ts";
export {
  HttpParser,
  type HttpParserLimits,
  type HttpParserSink,
} from "./handlers/protocols/http/http_parser.ts";
export {
  createProxy,
  type Proxy,
  proxy,
  ProxyCounters,
  type ProxyOptions,
} from "./handlers/protocols/proxy.ts";
export { type ProtocolFactory, Server, type ServerOptions } from "./server/server.ts";
export {
  type FetchApp,
  type FetchHandler,
  type FetchHandlerInfo,
  type HandlerLike,
  type HttpServer,
  type HttpServerOptions,
  serve,
  type ServeOptions,
} from "./server/serve.ts";
export {
  type NativeHandler,
  type NativeOptions,
  nativeProtocol,
  type NativeReply,
  type NativeRequest,
  type Route,
  RouteMatch,
  Router,
} from "./handlers/protocols/http/native.ts";
export { type NativeServer, serveNative, type ServeNativeOptions } from "./server/serve_native.ts";
export {
  upgradeWebSocket,
  type UpgradeWebSocketOptions,
  WebSocketHandshakeError,
} from "./handlers/protocols/http/websocket/mod.ts";
export { SyscallError } from "./syscalls/errno.ts";
export { IoUring, type IoUringProbe, probeIoUring } from "./syscalls/io_uring.ts";
