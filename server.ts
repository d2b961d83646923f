/**
 * Builds a server from options: a listening socket, a Reactor, an Acceptor,
 * and a protocol per connection (echo, http, ...).
 *
 * ```ts
 * const server = await Server.start({ app: "echo", host: "127.0.0.1", port: 0 });
 * console.log(server.port);
 * await server.stop();
 * ```
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { Reactor, type ReactorOptions } from "./reactor/reactor.ts";
import { Acceptor } from "./handlers/accept.ts";
import {
  type CloseReason,
  Connection,
  type ConnectionLimits,
  DEFAULT_LIMITS,
  type Protocol,
} from "./handlers/connection.ts";
import { echoProtocol } from "./handlers/echo.ts";
import { HttpApp, type HttpOptions } from "./handlers/http.ts";
import { close } from "./syscalls/libc.ts";
import { formatAddress, listenTcp, localAddress } from "./syscalls/socket.ts";

const log = getLogger(["reactor", "server"]);

/** The protocols `--app` can name. */
export const APPS = ["http", "echo"] as const;
/** One of `APPS`. */
export type AppName = typeof APPS[number];

/** Everything `Server.start` needs. */
export interface ServerOptions extends ReactorOptions {
  /** Which protocol to serve. */
  app: AppName;
  /** Address to listen on. */
  host: string;
  /** Port; 0 picks a free one (see `Server.port`). */
  port: number;
  /** listen(2) backlog. */
  backlog?: number;
  /** SO_REUSEPORT (several workers on one port). */
  reusePort?: boolean;
  /** Per-connection buffer limits. */
  limits?: ConnectionLimits;
  /** HTTP app settings. */
  http?: Partial<HttpOptions>;
  /** A custom protocol per connection; overrides `app` (for library users). */
  protocol?: ProtocolFactory;
}

/** Makes the protocol object for a new connection. */
export type ProtocolFactory = (conn: Connection) => Protocol;

function protocolFor(reactor: Reactor, opts: ServerOptions): ProtocolFactory {
  if (opts.protocol) return opts.protocol;
  switch (opts.app) {
    case "echo":
      return () => echoProtocol;
    case "http": {
      const app = new HttpApp(reactor, opts.http);
      return (conn) => app.protocol(conn);
    }
  }
}

/** A listening server on one reactor. */
export class Server {
  /** The event loop. */
  readonly reactor: Reactor;
  /** The listening socket's handler. */
  readonly acceptor: Acceptor;
  /** The host it listens on. */
  readonly host: string;
  /** The port it listens on (the real one when 0 was asked). */
  readonly port: number;
  readonly #connections = new Set<Connection>();
  readonly #listenFd: number;
  #running: Promise<void> | null = null;
  #closed = false;

  private constructor(
    reactor: Reactor,
    listenFd: number,
    host: string,
    port: number,
    factory: ProtocolFactory,
    limits: ConnectionLimits,
  ) {
    this.reactor = reactor;
    this.#listenFd = listenFd;
    this.host = host;
    this.port = port;
    const onClose = (conn: Connection, _reason: CloseReason) => {
      this.#connections.delete(conn);
      // A freed fd is the best moment to retry after EMFILE.
      if (this.acceptor.paused) this.acceptor.resume();
    };
    this.acceptor = new Acceptor(reactor, listenFd, (fd) => {
      const conn = new Connection(reactor, fd, echoProtocol, limits, onClose);
      conn.protocol = factory(conn);
      this.#connections.add(conn);
      conn.open();
    });
    this.acceptor.open();
  }

  /** Listens and registers; call `run()` (or use `serve`) to start the loop. */
  static async create(opts: ServerOptions): Promise<Server> {
    const reactor = await Reactor.create(opts);
    let fd: number;
    try {
      fd = listenTcp({
        host: opts.host,
        port: opts.port,
        backlog: opts.backlog,
        reusePort: opts.reusePort,
      });
    } catch (e) {
      reactor.close();
      throw e;
    }
    const port = localAddress(fd).port;
    return new Server(
      reactor,
      fd,
      opts.host,
      port,
      protocolFor(reactor, opts),
      opts.limits ?? DEFAULT_LIMITS,
    );
  }

  /** `create` then `run`: returns once listening; the loop runs in the background. */
  static async start(opts: ServerOptions): Promise<Server> {
    const server = await Server.create(opts);
    server.run();
    return server;
  }

  /** "host:port" as a client would dial it. */
  get address(): string {
    return formatAddress(this.host, this.port);
  }

  /** Connections currently open. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Runs the reactor; resolves when it stops. */
  run(): Promise<void> {
    this.#running ??= this.reactor.run();
    return this.#running;
  }

  /** Stops at once: closes the listener and every connection, then the reactor. */
  async stop(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.reactor.stop();
    if (this.#running) await this.#running;
    this.acceptor.close();
    close(this.#listenFd);
    for (const conn of [...this.#connections]) conn.close("local");
    log.debug("server {address} stopped: {counters}", {
      address: this.address,
      counters: this.reactor.counters.snapshot(),
    });
    this.reactor.close();
  }
}
