/**
 * Builds a server: a listening socket, a Reactor, a ConnectionContext, an
 * Acceptor, and a protocol per connection, taken from the registry by name
 * or given directly. Owns the connection set, so it can cap it
 * (`maxConnections`), drain it (`shutdown`) and report it (`metrics`). It
 * names no protocol.
 *
 * ```ts ignore
 * const server = await Server.start({ port: 0 }); // the registry's first protocol
 * console.log(server.port);
 * await server.shutdown(10_000);
 * ```
 *
 * @module
 */

import { getLogger } from "../log/mod.ts";
import { Reactor, type ReactorOptions } from "../reactor/reactor.ts";
import { Acceptor } from "../handlers/accept.ts";
import { type CloseReason, Connection, type Protocol } from "../handlers/connection.ts";
import {
  ConnectionContext,
  type ConnectionLimits,
  DEFAULT_TIMEOUTS,
  type Timeouts,
} from "../handlers/context.ts";
import {
  findProtocol,
  type Metric,
  type ProtocolDefinition,
  type ProtocolInstance,
  PROTOCOLS,
  type ProtocolSetup,
} from "../handlers/protocols/mod.ts";
import { close } from "../syscalls/libc.ts";
import { formatAddress, listenTcp, localAddress } from "../syscalls/socket.ts";
import { ensureLogging } from "../log/mod.ts";
import { coreMetrics, prometheusText } from "./metrics.ts";

const log = getLogger(["reactor", "server"]);

/** The reactor's options: a server's connections drain, so edge-triggered where epoll is. */
function reactorOptions(opts: ServerOptions): ReactorOptions {
  return opts.edge === undefined ? { ...opts, edge: "auto" } : opts;
}

/** Makes the protocol object for a new connection. */
export type ProtocolFactory = (conn: Connection) => Protocol;

/** Everything `Server.create` takes; all optional. */
export interface ServerOptions extends ReactorOptions {
  /** A protocol of the registry by name (`http`, `echo`, `proxy`). Default: the registry's first. */
  app?: string;
  /**
   * Edge-triggered registrations. Default "auto": edge-triggered on epoll
   * (its connections read until EAGAIN or a short read, one `epoll_wait`
   * report per arrival instead of a report and a re-check; ~1-2 % less CPU
   * per small request, see docs/performance.md §15), level-triggered on the
   * other backends. false: level-triggered on epoll too.
   */
  edge?: boolean | "auto";
  /**
   * Your own protocol instead of a named one: a definition (like the
   * registry's) or simply a function that makes a `Protocol` per connection.
   */
  protocol?: ProtocolDefinition | ProtocolFactory;
  /** Options for the protocol's `create` (e.g. `{ upstream: { host, port } }` for the proxy). */
  protocolOptions?: Record<string, unknown>;
  /** Address to listen on. Default 127.0.0.1. */
  host?: string;
  /** Port; 0 (the default) picks a free one (see `Server.port`). */
  port?: number;
  /** listen(2) backlog. Default 4096 (clamped by net.core.somaxconn). */
  backlog?: number;
  /** SO_REUSEPORT (several workers on one port). */
  reusePort?: boolean;
  /** Per-connection buffer limits. Default `DEFAULT_LIMITS`. */
  limits?: ConnectionLimits;
  /** Connection timeouts; null: none. Default `DEFAULT_TIMEOUTS` (idle 60 s, request 10 s, write 30 s). */
  timeouts?: Timeouts | null;
  /** Stop accepting while this many connections are open (0, the default: no cap). */
  maxConnections?: number;
  /** A label for metrics and logs (e.g. the worker number). */
  worker?: number;
  /** Size of the shared read buffer. Default 64 KiB. */
  readBufferSize?: number;
}

function definitionOf(opts: ServerOptions): ProtocolDefinition {
  const p = opts.protocol;
  if (typeof p === "function") {
    return { name: "custom", summary: "", flags: [], create: () => ({ connect: p }) };
  }
  if (p !== undefined) return p;
  const name = opts.app ?? PROTOCOLS[0].name;
  const found = findProtocol(name);
  if (found === undefined) {
    throw new TypeError(
      `Cannot serve "${name}": no such protocol (one of ${
        PROTOCOLS.map((d) => d.name).join(", ")
      })`,
    );
  }
  return found;
}

/** A listening server on one reactor. */
export class Server {
  /** The event loop. */
  readonly reactor: Reactor;
  /** What the connections share: read buffer, counters, limits, timeouts. */
  readonly context: ConnectionContext;
  /** The listening socket's handler. */
  readonly acceptor: Acceptor;
  /** The host it listens on. */
  readonly host: string;
  /** The port it listens on (the real one when 0 was asked). */
  readonly port: number;
  /** The protocol's definition (its name: `protocol.name`). */
  readonly protocol: ProtocolDefinition;
  /** The protocol as set up on this server (the proxy's counters are on it, for one). */
  readonly instance: ProtocolInstance;
  readonly #options: ServerOptions;
  readonly #connections = new Set<Connection>();
  readonly #listenFd: number;
  #listening = true;
  #running: Promise<void> | null = null;
  #stopped = false;
  #drained: (() => void) | null = null;
  readonly #startedAt = Date.now();

  private constructor(
    reactor: Reactor,
    listenFd: number,
    port: number,
    definition: ProtocolDefinition,
    context: ConnectionContext,
    instance: ProtocolInstance,
    opts: ServerOptions,
  ) {
    this.reactor = reactor;
    this.#listenFd = listenFd;
    this.host = opts.host ?? "127.0.0.1";
    this.port = port;
    this.protocol = definition;
    this.#options = opts;
    this.context = context;
    this.instance = instance;
    const onClose = (conn: Connection, _reason: CloseReason) => {
      this.#connections.delete(conn);
      if (this.#drained !== null && this.#connections.size === 0) this.#drained();
      // A freed fd or slot is the best moment to retry after EMFILE or the cap.
      else if (this.acceptor.paused && this.#listening) this.acceptor.resume();
    };
    this.acceptor = new Acceptor(reactor, listenFd, context.counters, (fd) => {
      const conn = new Connection(context, fd, NO_PROTOCOL, onClose);
      conn.protocol = instance.connect(conn);
      conn.open(); // may throw (the backend refused the fd): the Acceptor closes it
      this.#connections.add(conn);
    });
    const max = opts.maxConnections ?? 0;
    if (max > 0) {
      this.acceptor.gate = () => {
        if (this.#connections.size < max) return true;
        context.counters.connectionLimitHits++;
        return false;
      };
    }
    this.acceptor.open();
  }

  /**
   * The steps both `create` and `createSync` take: listen, build the
   * connection context, set the protocol up (`make` may await it), assemble.
   * On failure everything opened is closed again.
   */
  static #assemble(
    reactor: Reactor,
    opts: ServerOptions,
    definition: ProtocolDefinition,
    finish: (
      made: ProtocolInstance | Promise<ProtocolInstance>,
      build: (instance: ProtocolInstance) => Server,
    ) => Server | Promise<Server>,
  ): Server | Promise<Server> {
    let fd = -1;
    const cleanUp = (e: unknown): never => {
      if (fd >= 0) close(fd);
      reactor.close();
      throw e;
    };
    try {
      fd = listenTcp({
        host: opts.host ?? "127.0.0.1",
        port: opts.port ?? 0,
        backlog: opts.backlog,
        reusePort: opts.reusePort,
      });
      const context = new ConnectionContext(reactor, {
        limits: opts.limits,
        timeouts: opts.timeouts === undefined ? DEFAULT_TIMEOUTS : opts.timeouts,
        readBufferSize: opts.readBufferSize,
      });
      const port = localAddress(fd).port;
      let server: Server | null = null;
      const setup: ProtocolSetup = {
        context,
        metricsText: () => server?.metrics() ?? "",
        address: { host: opts.host ?? "127.0.0.1", port },
      };
      const made = definition.create(setup, opts.protocolOptions ?? {});
      const build = (instance: ProtocolInstance) =>
        server = new Server(reactor, fd, port, definition, context, instance, opts);
      const done = finish(made, build);
      return done instanceof Promise ? done.catch(cleanUp) : done;
    } catch (e) {
      return cleanUp(e);
    }
  }

  /**
   * Listens and registers; call `run()` (or use `start`) to run the loop.
   *
   * @throws {SyscallError} when the address cannot be listened on (EADDRINUSE, EACCES, ...)
   * @throws {TypeError} for an unknown protocol name or bad protocol options
   */
  static async create(opts: ServerOptions = {}): Promise<Server> {
    ensureLogging();
    const definition = definitionOf(opts);
    const reactor = await Reactor.create(reactorOptions(opts));
    return await Server.#assemble(
      reactor,
      opts,
      definition,
      async (made, build) => build(await made),
    );
  }

  /**
   * `create` without awaiting, for APIs that must listen before they return
   * (`serve()`, like `Deno.serve`): epoll, io_uring or auto, and the
   * protocol's `create` must not return a promise.
   *
   * @throws {TypeError} for poll or select, or a protocol that sets up asynchronously
   * @throws {IoUringUnavailableError} for io_uring where it cannot be set up
   */
  static createSync(opts: ServerOptions = {}): Server {
    ensureLogging();
    const definition = definitionOf(opts);
    const reactor = Reactor.createSync(reactorOptions(opts));
    return Server.#assemble(reactor, opts, definition, (made, build) => {
      if (made instanceof Promise) {
        made.catch(() => {}); // refused below; do not leave it unhandled
        throw new TypeError(`Cannot set up "${definition.name}" synchronously`);
      }
      return build(made);
    }) as Server;
  }

  /** `create` then `run`: returns once listening; the loop runs in the background. */
  static async start(opts: ServerOptions = {}): Promise<Server> {
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
    this.instance.stop?.(); // e.g. upstreams still flushing for clients that already finished
    await this.reactor.drain(); // io_uring: bytes closed connections took still go out
    log.debug("server {address} stopped: {counters}", {
      address: this.address,
      counters: this.stats(),
    });
    this.reactor.close();
  }

  /** Every metric: the connection layer's, the loop's, then the protocol's. */
  metricList(): Metric[] {
    const core = coreMetrics(
      this.#connections.size,
      this.context.counters,
      this.reactor.counters,
      this.#startedAt,
    );
    return this.instance.metrics ? core.concat(this.instance.metrics()) : core;
  }

  /** Counters in the Prometheus text exposition format. */
  metrics(): string {
    const worker = this.#options.worker;
    return prometheusText(this.metricList(), worker !== undefined ? `{worker="${worker}"}` : "");
  }

  /** One flat object of counters for the periodic stats log. */
  stats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const m of this.metricList()) out[m.name] = m.value;
    return out;
  }
}

/** Placeholder while the protocol's `connect` runs (it may look at the connection). */
const NO_PROTOCOL: Protocol = { data() {} };
