/**
 * A TCP proxy on the reactor: every accepted client gets its own upstream
 * connection, and bytes flow both ways through the two connections' output
 * buffers.
 *
 * - Connect: nonblocking `connect`, the fd registered for writable, SO_ERROR
 *   read when it turns writable; a reactor timer bounds the wait. On failure
 *   the client gets a FIN and no data (the Connection's lingering close, so
 *   not a reset even when it has sent bytes we never read).
 * - Early bytes: what the client sends while the connect is in flight waits
 *   in a pending buffer; reading from the client pauses at the high-water mark.
 * - Backpressure, per direction, from the connections' own events: when the
 *   upstream's output reaches high water (`highWater`), reading from the
 *   client pauses; at low water (`lowWater`) it resumes. The same the other
 *   way. The directions are independent: a client slow to read its downloads
 *   still gets its uploads through.
 * - Activity: a side paused by backpressure is waiting on us, not idle; the
 *   upstream has the write timeout, so a stuck upstream is still caught.
 * - Half-close: a FIN from one side is passed on with `shutdownWrite()` on
 *   the other once everything before it is flushed; the other direction keeps
 *   flowing. Both closed when both directions are done.
 * - Errors and cuts: a pair torn down with bytes still in flight (queued for
 *   either side, or dropped at a close), or because one side reset, is reset
 *   (RST) on both sides: a FIN would pass a truncated stream off as complete.
 *
 * @module
 */

import { getLogger } from "../../log/mod.ts";
import { Interest, Ready } from "../../reactor/interest.ts";
import type { Handler, Reactor } from "../../reactor/reactor.ts";
import type { Timer } from "../../reactor/timers.ts";
import { IPPROTO_TCP, TCP_NODELAY } from "../../syscalls/constants.ts";
import { errnoName, ETIMEDOUT, SyscallError } from "../../syscalls/errno.ts";
import { close, setsockopt } from "../../syscalls/libc.ts";
import { connectTcp, formatAddress, resolveHost, socketError } from "../../syscalls/socket.ts";
import { type CloseReason, Connection, type Protocol, type TimeoutKind } from "../connection.ts";
import { OutputBuffer } from "../output_buffer.ts";
import type { ProtocolDefinition, ProtocolInstance } from "./definition.ts";

const log = getLogger(["reactor", "proxy"]);
const one = new Uint8Array(new Int32Array([1]).buffer);
const EIO = 5;

/** Proxy settings. */
export interface ProxyOptions {
  /** Where to forward. */
  upstream: { host: string; port: number };
  /** Give up on an upstream connect after this long (ETIMEDOUT). Default 5000 ms. */
  connectTimeoutMs?: number;
  /**
   * When one side has finished both ways and closed, how long the other may
   * take to flush what is left to it before both are dropped. Default 30 s.
   */
  flushTimeoutMs?: number;
}

/** Proxy-specific counters; bytes, pauses and closes are in the connection counters. */
export class ProxyCounters {
  /** Upstream connects started (one per client). */
  connects = 0;
  /** Of those, connected. */
  connected = 0;
  /** Connects that failed (refused, unreachable, timed out, no fds...). */
  connectFailures = 0;
  /** Of the failures, those that hit the connect timeout. */
  connectTimeouts = 0;
  /** Pairs cut because the upstream reset or errored mid-stream. */
  upstreamErrors = 0;
  /** Pairs cut because the client reset or errored mid-stream. */
  clientErrors = 0;
  /** Pairs reset on both sides because bytes were still in flight when they were torn down. */
  resets = 0;
  /** FINs passed on with shutdown(SHUT_WR), either way. */
  halfCloses = 0;
  /** Client/upstream pairs alive now. */
  active = 0;

  /** A plain object copy, for logs and JSON. */
  snapshot(): Record<string, number> {
    return Object.fromEntries(Object.entries(this));
  }
}

/** A proxy set up on a server: the per-connection factory plus its counters. */
export interface Proxy extends ProtocolInstance {
  /** Proxy-specific counters. */
  readonly counters: ProxyCounters;
  /** Where clients are forwarded, as "host:port". */
  readonly upstream: string;
  /**
   * Closes every pair now. Closing a client closes its upstream too, except
   * where the client has already finished and its upstream is still
   * flushing: the server calls this (as `stop`) after its loop ends.
   */
  closeAll(): void;
}

/** Settings and state shared by every pair of one proxy. */
interface Shared {
  readonly host: string;
  readonly port: number;
  readonly address: string;
  readonly connectTimeoutMs: number;
  readonly flushTimeoutMs: number;
  readonly counters: ProxyCounters;
  /** Every pair alive, for `closeAll`. */
  readonly pairs: Set<Pair>;
  lastFailureLog: number;
  failuresNotLogged: number;
}

/** A pair's life: connecting, then open or failed, then closed. */
const State = {
  Connecting: 0,
  Open: 1,
  /** The connect failed: the client is in its lingering close. */
  Failed: 2,
  Closed: 3,
} as const;
type State = typeof State[keyof typeof State];

/** Close reasons that mean a side was cut, not finished. */
function isFailure(reason: CloseReason): boolean {
  return reason === "reset" || reason === "hangup" || reason === "error" ||
    reason === "overflow";
}

/**
 * One client and its upstream. The protocol of both connections (told apart
 * by identity) and, while connecting, the handler of the upstream fd.
 */
class Pair implements Protocol, Handler {
  readonly #shared: Shared;
  readonly #reactor: Reactor;
  readonly client: Connection;
  upstream: Connection | null = null;
  #state: State = State.Connecting;
  /** The upstream fd while the connect is in flight, else -1. */
  #connectFd = -1;
  /** The connect timeout; later, the flush timeout after one side finished. */
  #timer: Timer | null = null;
  /** Client bytes that arrived before the upstream connected. */
  #pending: OutputBuffer | null = new OutputBuffer();
  #clientEof = false;
  #upstreamEof = false;
  #clientShut = false;
  #upstreamShut = false;
  /** Graceful shutdown asked: close once nothing is buffered either way. */
  #draining = false;

  constructor(shared: Shared, client: Connection) {
    this.#shared = shared;
    this.#reactor = client.reactor;
    this.client = client;
  }

  /** Starts the upstream connect. Runs before the client is registered: never closes it here. */
  start(): void {
    const shared = this.#shared;
    const reactor = this.#reactor;
    shared.counters.connects++;
    shared.counters.active++;
    shared.pairs.add(this);
    let code = EIO;
    try {
      const { fd } = connectTcp(shared.host, shared.port);
      try {
        // Registered for writable even when connect returned 0 at once: one path.
        reactor.register(fd, this, Interest.WRITABLE);
      } catch (e) {
        close(fd);
        throw e;
      }
      this.#connectFd = fd;
      this.#timer = reactor.setTimer(shared.connectTimeoutMs, () => this.#fail(ETIMEDOUT));
      return;
    } catch (e) {
      if (e instanceof SyscallError) code = e.errno;
      else log.error("upstream {upstream}: {error}", { upstream: shared.address, error: e });
    }
    // socket() or connect() failed synchronously (no fds, unreachable...).
    // The server registers the client after this factory returns, so the
    // failure is handled on the next loop iteration.
    this.#timer = reactor.setTimer(0, () => this.#fail(code));
  }

  // ---- connecting: the upstream fd's handler ----

  /** The connect finished (writable) or failed (error). */
  ready(ready: number): void {
    const fd = this.#connectFd;
    if (fd < 0) return;
    let code: number;
    try {
      code = socketError(fd);
    } catch (e) {
      code = e instanceof SyscallError ? e.errno : EIO;
    }
    if (code === 0 && (ready & Ready.ERROR) !== 0) code = EIO;
    if (code !== 0) {
      this.#fail(code);
      return;
    }
    this.#connected(fd);
  }

  /** The connect handler threw (the reactor logged it): drop the pair. */
  crashed(): void {
    this.#teardown("error");
  }

  #connected(fd: number): void {
    const shared = this.#shared;
    const reactor = this.#reactor;
    reactor.deregister(fd);
    this.#connectFd = -1;
    this.#cancelTimer();
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4);
    const client = this.client;
    const upstream = new Connection(client.context, fd, this);
    this.upstream = upstream;
    this.#state = State.Open;
    shared.counters.connected++;
    // The upstream gets the write timeout only: it is idle whenever the
    // client is, and the client's own timeouts cover that.
    const t = client.context.timeouts;
    upstream.open(
      t !== null && t.writeMs > 0 ? { idleMs: 0, requestMs: 0, writeMs: t.writeMs } : null,
    );
    const pending = this.#pending!;
    this.#pending = null;
    // Below high water after the early bytes: the client may send more.
    if (pending.length === 0 || upstream.write(pending.pending(), 0, pending.length)) {
      client.resumeReading();
    }
    if (this.#clientEof) this.#shutUpstreamIfFlushed();
    this.#finishIfDone();
  }

  #fail(code: number): void {
    if (this.#state !== State.Connecting) return;
    const counters = this.#shared.counters;
    counters.connectFailures++;
    if (code === ETIMEDOUT) counters.connectTimeouts++;
    this.#logFailure(code);
    this.#cancelTimer();
    if (this.#connectFd >= 0) {
      this.#reactor.deregister(this.#connectFd);
      close(this.#connectFd);
      this.#connectFd = -1;
    }
    this.#pending = null;
    this.#state = State.Failed;
    // FIN, then read and drop until the client closes (a close with its
    // bytes unread would send a reset); the closed hook ends the pair.
    if (this.client.closed) this.#teardown();
    else this.client.closeAfterFlush();
  }

  #logFailure(code: number): void {
    // One line per second at most: a dead upstream under load fails every client.
    const shared = this.#shared;
    const now = this.#reactor.now;
    if (now - shared.lastFailureLog < 1000) {
      shared.failuresNotLogged++;
      return;
    }
    shared.lastFailureLog = now;
    const more = shared.failuresNotLogged;
    shared.failuresNotLogged = 0;
    log.warn("upstream {upstream}: connect failed: {code}; closing the client{more}", {
      upstream: shared.address,
      code: errnoName(code),
      more: more > 0 ? ` (and ${more} more since the last report)` : "",
    });
  }

  // ---- Protocol, for both connections ----

  /** Bytes from either side: forward them to the other. */
  data(conn: Connection, data: Uint8Array, start: number, end: number): void {
    if (conn === this.client) {
      if (this.#state === State.Open) {
        this.#forward(this.upstream!, data, start, end);
      } else if (this.#state === State.Connecting) {
        const pending = this.#pending!;
        pending.append(data, start, end);
        if (pending.length >= conn.context.limits.highWaterMark) conn.pauseReading();
      }
      return;
    }
    // The client's idle timeout watches its own traffic; a tunnel that only
    // downloads is not idle.
    this.client.lastRead = this.#reactor.now;
    this.#forward(this.client, data, start, end);
  }

  #forward(dest: Connection, data: Uint8Array, start: number, end: number): void {
    // Straight from the shared read buffer by its pointer, as echo does.
    const ctx = dest.context;
    if (start === 0 && data === ctx.readBuffer) {
      dest.writeFrom(ctx.readBufferPointer, data, end);
    } else {
      dest.write(data, start, end);
    }
  }

  /** `conn`'s output is full: stop reading from the side that feeds it. */
  highWater(conn: Connection): void {
    const source = conn === this.client ? this.upstream : this.client;
    source?.pauseReading();
  }

  /** `conn`'s output is down to low water: read from the side that feeds it again. */
  lowWater(conn: Connection): void {
    const source = conn === this.client ? this.upstream : this.client;
    source?.resumeReading();
  }

  /** A side sent FIN. */
  end(conn: Connection): void {
    if (conn === this.client) {
      this.#clientEof = true;
      if (this.#state === State.Open) this.#shutUpstreamIfFlushed();
    } else {
      this.#upstreamEof = true;
      this.#shutClientIfFlushed();
    }
    this.#finishIfDone();
  }

  /** A side's output drained: pass on a FIN that waited for it. */
  drained(conn: Connection): void {
    if (this.#state !== State.Open) return;
    if (conn === this.upstream) this.#shutUpstreamIfFlushed();
    else this.#shutClientIfFlushed();
    this.#finishIfDone();
    if (this.#draining) this.#closeIfQuiet();
  }

  /** A timeout of either side: tear the pair down (reset if bytes are in flight). */
  timedOut(conn: Connection, what: TimeoutKind): void {
    log.debug("{side} {what} timeout; closing the pair", {
      side: conn === this.client ? "client" : "upstream",
      what,
    });
    this.#teardown("timeout");
  }

  /** A side closed (deferred: after the close). */
  closed(conn: Connection, reason: CloseReason): void {
    if (this.#state === State.Closed) return;
    const isClient = conn === this.client;
    // A side that finished both ways closes by itself (a hang-up after our
    // shutdown and its FIN): the other side may still be flushing to its peer.
    const finished = isClient
      ? this.#clientEof && this.#clientShut
      : this.#upstreamEof && this.#upstreamShut;
    if (finished && conn.unsentAtClose === 0) {
      const other = isClient ? this.upstream : this.client;
      if (other !== null && !other.closed) {
        this.#cancelTimer();
        this.#timer = this.#reactor.setTimer(this.#shared.flushTimeoutMs, () => this.#teardown());
        this.#finishIfDone();
        return;
      }
    } else if (this.#state === State.Open) {
      const counters = this.#shared.counters;
      if (reason === "reset" || reason === "hangup") {
        if (isClient) counters.clientErrors++;
        else counters.upstreamErrors++;
      }
      if (isClient) {
        log.debug("client closed ({reason}) mid-stream; closing its upstream", { reason });
      } else {
        log.info("upstream {upstream} closed ({reason}) mid-stream; closing the client", {
          upstream: this.#shared.address,
          reason,
        });
      }
    }
    this.#teardown(reason);
  }

  /**
   * Graceful server shutdown. A proxy cannot see request boundaries: a
   * tunnel with nothing buffered either way is closed now (the client with a
   * FIN), one with bytes in hand as soon as they are delivered; a stream
   * that never queues runs on until the server's shutdown timeout.
   */
  shutdown(_conn: Connection): void {
    // Failed: already in its lingering close. Closed: nothing left to do.
    if (this.#state === State.Failed || this.#state === State.Closed) return;
    this.#draining = true;
    if (this.#state === State.Connecting) this.#closeGracefully();
    else this.#closeIfQuiet();
  }

  // ---- half-close, teardown ----

  #shutUpstreamIfFlushed(): void {
    const upstream = this.upstream;
    if (!this.#clientEof || this.#upstreamShut || upstream === null || upstream.closed) return;
    if (upstream.output.length > 0) return; // `drained` comes back here
    this.#halfClose(upstream);
    this.#upstreamShut = true;
  }

  #shutClientIfFlushed(): void {
    const client = this.client;
    if (!this.#upstreamEof || this.#clientShut || client.closed) return;
    if (client.output.length > 0) return; // `drained` comes back here
    this.#halfClose(client);
    this.#clientShut = true;
  }

  #halfClose(conn: Connection): void {
    const r = conn.shutdownWrite();
    if (r < 0) {
      // ENOTCONN: the peer is already gone; the close path cleans up.
      log.debug("shutdown(SHUT_WR) on fd {fd}: {code}", { fd: conn.fd, code: errnoName(-r) });
      conn.close("reset");
      return;
    }
    this.#shared.counters.halfCloses++;
  }

  #finishIfDone(): void {
    if (this.#clientEof && this.#upstreamShut && this.#upstreamEof && this.#clientShut) {
      this.#teardown("eof");
    }
  }

  #closeIfQuiet(): void {
    const upstream = this.upstream;
    if (this.client.output.length === 0 && (upstream === null || upstream.output.length === 0)) {
      this.#closeGracefully();
    }
  }

  /** Closes the upstream, and the client with a FIN and a lingering close. */
  #closeGracefully(): void {
    this.#teardown("shutdown", false);
    this.client.closeAfterFlush();
  }

  #cancelTimer(): void {
    if (this.#timer !== null) {
      this.#reactor.cancelTimer(this.#timer);
      this.#timer = null;
    }
  }

  /** Whether tearing down now would lose bytes: queued for a side, or dropped at a close. */
  #bytesInFlight(): boolean {
    const c = this.client;
    const u = this.upstream;
    return c.output.length > 0 || c.unsentAtClose > 0 || (this.#pending?.length ?? 0) > 0 ||
      (u !== null && (u.output.length > 0 || u.unsentAtClose > 0));
  }

  /** Closes both connections (and a connect in flight) now. */
  close(): void {
    this.#teardown();
  }

  /**
   * Closes everything this pair holds (the client too unless `closeClient`
   * is false). A pair cut short (a failure, or bytes still in flight) is
   * reset on both sides. Idempotent.
   */
  #teardown(reason: CloseReason = "local", closeClient = true): void {
    if (this.#state === State.Closed) return;
    const cut = (this.#state === State.Open && isFailure(reason)) || this.#bytesInFlight();
    this.#state = State.Closed;
    const shared = this.#shared;
    shared.counters.active--;
    shared.pairs.delete(this);
    this.#cancelTimer();
    if (this.#connectFd >= 0) {
      this.#reactor.deregister(this.#connectFd);
      close(this.#connectFd);
      this.#connectFd = -1;
    }
    this.#pending = null;
    if (cut) shared.counters.resets++;
    const sides = closeClient ? [this.client, this.upstream] : [this.upstream];
    for (const side of sides) {
      if (side === null || side.closed) continue;
      if (cut) side.abort(reason === "eof" ? "reset" : reason);
      else side.close(reason);
    }
  }
}

/**
 * Creates a TCP proxy to `options.upstream`: a protocol instance whose
 * `connect` gives each client its own upstream connection on the client's
 * reactor. Proxy-specific counters are on the result (`.counters`).
 *
 * @throws {Error} when the upstream host is not an IP address
 */
export function createProxy(options: ProxyOptions): Proxy {
  const { upstream } = options;
  resolveHost(upstream.host); // a bad address fails here, not once per client
  const shared: Shared = {
    host: upstream.host,
    port: upstream.port,
    address: formatAddress(upstream.host, upstream.port),
    connectTimeoutMs: options.connectTimeoutMs ?? 5000,
    flushTimeoutMs: options.flushTimeoutMs ?? 30_000,
    counters: new ProxyCounters(),
    pairs: new Set(),
    lastFailureLog: -Infinity,
    failuresNotLogged: 0,
  };
  const closeAll = () => {
    for (const pair of [...shared.pairs]) pair.close();
  };
  const c = shared.counters;
  return {
    counters: c,
    upstream: shared.address,
    closeAll,
    connect(client: Connection): Protocol {
      const pair = new Pair(shared, client);
      pair.start();
      return pair;
    },
    metrics: () => [
      {
        name: "proxy_upstream_connects_total",
        type: "counter",
        help: "Upstream connects.",
        value: c.connects,
      },
      {
        name: "proxy_upstream_connect_failures_total",
        type: "counter",
        help: "Failed upstream connects.",
        value: c.connectFailures,
      },
      {
        name: "proxy_upstream_errors_total",
        type: "counter",
        help: "Pairs cut by an upstream reset.",
        value: c.upstreamErrors,
      },
      {
        name: "proxy_resets_total",
        type: "counter",
        help: "Pairs reset on both sides with bytes in flight.",
        value: c.resets,
      },
      {
        name: "proxy_pairs_open",
        type: "gauge",
        help: "Client/upstream pairs open.",
        value: c.active,
      },
    ],
    stop: closeAll,
  };
}

/** `--app proxy`: forwards every client to `--upstream`. */
export const proxy: ProtocolDefinition = {
  name: "proxy",
  summary: "TCP proxy: every client gets its own connection to --upstream",
  flags: [{
    name: "upstream",
    key: "upstream",
    kind: "address",
    help: "where the proxy forwards (HOST:PORT)",
    required: true,
  }],
  create(_setup, options) {
    const upstream = options.upstream as ProxyOptions["upstream"] | undefined;
    if (upstream === undefined || typeof upstream.host !== "string") {
      throw new TypeError(
        "Cannot create the proxy: the upstream option ({ host, port }) is missing",
      );
    }
    return createProxy({ ...(options as Partial<ProxyOptions>), upstream });
  },
};
