/**
 * Builds a server from options: a listening socket, a Reactor, an Acceptor,
 * and a protocol per connection (echo, http, ...). Owns the connection set,
 * so it can cap it (`maxConnections`), drain it (`shutdown`) and report it
 * (`metrics`).
 *
 * ```ts
 * const server = await Server.start({ app: "echo", host: "127.0.0.1", port: 0 });
 * console.log(server.port);
 * await server.shutdown(10_000);
 * ```
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { Reactor, type ReactorOptions } from "../reactor/reactor.ts";
import { Acceptor } from "../handlers/accept.ts";
import {
  type CloseReason,
  Connection,
  type ConnectionLimits,
  DEFAULT_LIMITS,
  type Protocol,
  type Timeouts,
} from "../handlers/connection.ts";
import type { AppName } from "../handlers/apps.ts";
import { echoProtocol } from "../handlers/protocols/echo.ts";
import { HttpApp, type HttpOptions } from "../handlers/protocols/http/http.ts";
import { createProxy, type ProxyFactory } from "../handlers/protocols/proxy.ts";
import { close } from "../syscalls/libc.ts";
import { formatAddress, listenTcp, localAddress } from "../syscalls/socket.ts";

const log = getLogger(["reactor", "server"]);

export { type AppName, APPS } from "../handlers/apps.ts";

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
  /** Connection timeouts; null or absent: none. */
  timeouts?: Timeouts | null;
  /** Stop accepting while this many connections are open (0: no cap). */
  maxConnections?: number;
  /** HTTP app settings. */
  http?: Partial<HttpOptions>;
  /** A custom protocol per connection; overrides `app` (for library users). */
  protocol?: ProtocolFactory;
  /** A label for metrics and logs (e.g. the worker number). */
  worker?: number;
  /** For the proxy app: where to forward. */
  upstream?: { host: string; port: number };
}

/** Makes the protocol object for a new connection. */
export type ProtocolFactory = (conn: Connection) => Protocol;

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
  /** The HTTP app, when `app` is http. */
  readonly http: HttpApp | null = null;
  /** The proxy, when `app` is proxy (its own counters: `proxy.counters`). */
  readonly proxy: ProxyFactory | null = null;
  readonly #options: ServerOptions;
  readonly #connections = new Set<Connection>();
  readonly #listenFd: number;
  #listening = true;
  #running: Promise<void> | null = null;
  #stopped = false;
  #drained: (() => void) | null = null;
  readonly #startedAt = Date.now();

  private constructor(reactor: Reactor, listenFd: number, port: number, opts: ServerOptions) {
    this.reactor = reactor;
    this.#listenFd = listenFd;
    this.host = opts.host;
    this.port = port;
    this.#options = opts;
    let factory: ProtocolFactory;
    if (opts.protocol) {
      factory = opts.protocol;
    } else if (opts.app === "http") {
      const routes = {
        "/metrics": () => ({ status: 200, contentType: METRICS_TYPE, body: this.metrics() }),
      };
      const app = new HttpApp(reactor, {
        ...opts.http,
        routes: { ...routes, ...opts.http?.routes },
      });
      this.http = app;
      factory = (conn) => app.protocol(conn);
    } else if (opts.app === "proxy") {
      if (!opts.upstream) throw new Error("the proxy app needs `upstream` (host and port)");
      const proxy = createProxy(reactor, opts.upstream, { limits: opts.limits });
      this.proxy = proxy;
      factory = proxy;
    } else {
      factory = () => echoProtocol;
    }
    const limits = opts.limits ?? DEFAULT_LIMITS;
    const timeouts = opts.timeouts ?? null;
    const onClose = (conn: Connection, _reason: CloseReason) => {
      this.#connections.delete(conn);
      if (this.#drained !== null && this.#connections.size === 0) this.#drained();
      // A freed fd or slot is the best moment to retry after EMFILE or the cap.
      else if (this.acceptor.paused && this.#listening) this.acceptor.resume();
    };
    this.acceptor = new Acceptor(reactor, listenFd, (fd) => {
      const conn = new Connection(reactor, fd, echoProtocol, limits, onClose);
      conn.protocol = factory(conn);
      conn.open(timeouts); // may throw (the backend refused the fd): the Acceptor closes it
      this.#connections.add(conn);
    });
    const max = opts.maxConnections ?? 0;
    if (max > 0) {
      this.acceptor.gate = () => {
        if (this.#connections.size < max) return true;
        reactor.counters.connectionLimitHits++;
        return false;
      };
    }
    this.acceptor.open();
  }

  /** Listens and registers; call `run()` (or use `start`) to run the loop. */
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
    return new Server(reactor, fd, localAddress(fd).port, opts);
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

  #stopListening(): void {
    if (!this.#listening) return;
    this.#listening = false;
    this.acceptor.close();
    close(this.#listenFd);
  }

  /**
   * Graceful stop: stop accepting, let requests in flight finish and flush,
   * close idle connections; after `timeoutMs` close whatever is left. Resolves
   * when the reactor has stopped; returns how many connections were cut.
   */
  async shutdown(timeoutMs: number): Promise<number> {
    if (this.#stopped) return 0;
    this.#stopListening();
    let cut = 0;
    if (this.#connections.size > 0 && this.reactor.running) {
      log.info("draining {n} connections (at most {ms} ms)", {
        n: this.#connections.size,
        ms: timeoutMs,
      });
      const drained = new Promise<void>((resolve) => this.#drained = resolve);
      for (const conn of [...this.#connections]) conn.shutdown();
      const timer = this.reactor.setTimer(timeoutMs, () => this.#drained?.());
      await drained;
      this.reactor.cancelTimer(timer);
      cut = this.#connections.size;
      if (cut > 0) log.warn("shutdown timeout: closing {n} unfinished connections", { n: cut });
    }
    await this.stop();
    return cut;
  }

  /** Stops at once: closes the listener and every connection, then the reactor. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#stopListening();
    this.reactor.stop();
    if (this.#running) await this.#running;
    for (const conn of [...this.#connections]) conn.close("shutdown");
    this.proxy?.closeAll(); // upstreams still flushing for clients that already finished
    log.debug("server {address} stopped: {counters}", {
      address: this.address,
      counters: this.reactor.counters.snapshot(),
    });
    this.reactor.close();
  }

  /** Counters in the Prometheus text exposition format. */
  metrics(): string {
    const c = this.reactor.counters;
    const labels = this.#options.worker !== undefined ? `{worker="${this.#options.worker}"}` : "";
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, value: number) => {
      lines.push(`# HELP reactor_${name} ${help}`, `# TYPE reactor_${name} ${type}`);
      lines.push(`reactor_${name}${labels} ${value}`);
    };
    metric("connections_open", "gauge", "Connections open now.", this.#connections.size);
    metric("connections_accepted_total", "counter", "Connections accepted.", c.accepted);
    metric("connections_closed_total", "counter", "Connections closed.", c.closed);
    metric("requests_total", "counter", "HTTP requests answered.", this.http?.requests ?? 0);
    metric("bytes_received_total", "counter", "Bytes read from peers.", c.bytesIn);
    metric("bytes_sent_total", "counter", "Bytes sent to peers.", c.bytesOut);
    metric("send_eagain_total", "counter", "Sends that hit EAGAIN or were partial.", c.sendEagain);
    metric("writable_arms_total", "counter", "Times EPOLLOUT was armed.", c.writableArms);
    metric("read_pauses_total", "counter", "Times backpressure paused reading.", c.readPauses);
    metric("timeouts_total", "counter", "Connections closed by a timeout.", c.timeouts);
    metric("overflows_total", "counter", "Connections closed at the output cap.", c.overflows);
    metric(
      "connection_limit_hits_total",
      "counter",
      "Accept pauses at the cap.",
      c.connectionLimitHits,
    );
    metric("accept_limit_hits_total", "counter", "accept() out of fds/memory.", c.acceptLimitHits);
    if (this.proxy) {
      const p = this.proxy.counters;
      metric("proxy_upstream_connects_total", "counter", "Upstream connects.", p.connects);
      metric("proxy_upstream_connect_failures_total", "counter", "Failed.", p.connectFailures);
      metric("proxy_upstream_errors_total", "counter", "Upstream resets.", p.upstreamErrors);
      metric("proxy_pairs_open", "gauge", "Client/upstream pairs open.", p.active);
    }
    metric("waits_total", "counter", "Wait calls (epoll_wait, poll, select).", c.waits);
    metric("events_total", "counter", "Readiness events dispatched.", c.events);
    metric("handler_errors_total", "counter", "Handler exceptions caught.", c.handlerErrors);
    const mem = Deno.memoryUsage();
    metric("heap_used_bytes", "gauge", "JS heap in use.", mem.heapUsed);
    metric("rss_bytes", "gauge", "Resident set size.", mem.rss);
    metric(
      "uptime_seconds",
      "gauge",
      "Seconds since start.",
      (Date.now() - this.#startedAt) / 1000,
    );
    return lines.join("\n") + "\n";
  }

  /** One line of counters for the periodic stats log. */
  stats(): Record<string, number> {
    const mem = Deno.memoryUsage();
    return {
      open: this.#connections.size,
      requests: this.http?.requests ?? 0,
      ...this.reactor.counters.snapshot(),
      heapUsed: mem.heapUsed,
      rss: mem.rss,
    };
  }
}

const METRICS_TYPE = "text/plain; version=0.0.4";
