/**
 * A TCP proxy on the reactor: every accepted client gets its own upstream
 * connection, and bytes flow both ways through the two connections' output
 * buffers.
 *
 * - Connect: nonblocking `connect`, the fd registered for EPOLLOUT, SO_ERROR
 *   read when it turns writable; a reactor timer bounds the wait. On failure
 *   the client gets a FIN and no data (the Connection's lingering close, so
 *   not a reset even when it has sent bytes we never read).
 * - Early bytes: what the client sends while the connect is in flight waits
 *   in a pending buffer, under the same high-water mark as an output buffer.
 * - Backpressure, per direction: when the destination's pending output
 *   reaches `highWaterMark`, reading from the source pauses; it resumes once
 *   the destination is down to `lowWaterMark`. Each direction is independent,
 *   so a client that is slow to read still gets its uploads through.
 * - Half-close: a FIN from one side is passed on with `shutdown(SHUT_WR)` on
 *   the other once everything before it is flushed; the other direction keeps
 *   flowing. Both closed when both directions are done.
 * - Errors: a reset or an error on one side resets the other (a FIN would
 *   pass a truncated stream off as complete); a timeout closes both.
 *
 * ```ts
 * const proxy = createProxy(null, { host: "127.0.0.1", port: 9000 });
 * const server = await Server.start({ app: "proxy", host: "127.0.0.1", port: 0, protocol: proxy });
 * ```
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { Handler, Reactor } from "../../reactor/reactor.ts";
import type { Timer } from "../../reactor/timers.ts";
import {
  EPOLLERR,
  EPOLLOUT,
  IPPROTO_TCP,
  SHUT_WR,
  SO_LINGER,
  SOL_SOCKET,
  TCP_NODELAY,
} from "../../syscalls/constants.ts";
import { errnoName, ETIMEDOUT, SyscallError } from "../../syscalls/errno.ts";
import { close, errno, setsockopt, shutdown } from "../../syscalls/libc.ts";
import { connectTcp, formatAddress, resolveHost, socketError } from "../../syscalls/socket.ts";
import {
  type CloseReason,
  Connection,
  type ConnectionLimits,
  DEFAULT_LIMITS,
  type Protocol,
} from "../connection.ts";
import { OutputBuffer } from "../output_buffer.ts";

const log = getLogger(["reactor", "proxy"]);
const one = new Uint8Array(new Int32Array([1]).buffer);
const EIO = 5;
const lingerZero = new Uint8Array(new Int32Array([1, 0]).buffer); // l_onoff 1, l_linger 0

/**
 * Makes the next close() of `conn` send RST instead of FIN: the peer on the
 * other side reset, and its peer must not take the cut stream for a whole one.
 */
function abortive(conn: Connection): void {
  if (!conn.closed) setsockopt(conn.fd, SOL_SOCKET, SO_LINGER, lingerZero, 8);
}

/** Proxy settings. */
export interface ProxyOptions {
  /**
   * Buffer limits for both directions; pass the server's `limits` (a client
   * connection does not expose its own). Default `DEFAULT_LIMITS`.
   */
  limits?: ConnectionLimits;
  /** Give up on an upstream connect after this long (ETIMEDOUT). Default 5000 ms. */
  connectTimeoutMs?: number;
  /**
   * When one side has finished both ways and closed, how long the other may
   * take to flush what is left to it before both are dropped. Default 30 s.
   */
  flushTimeoutMs?: number;
}

/** Proxy-specific counters; bytes, pauses and closes are in the reactor's counters. */
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
  /** FINs passed on with shutdown(SHUT_WR), either way. */
  halfCloses = 0;
  /** Client/upstream pairs alive now. */
  active = 0;

  /** A plain object copy, for logs and JSON. */
  snapshot(): Record<string, number> {
    return Object.fromEntries(Object.entries(this));
  }
}

/** The protocol factory `createProxy` returns; pass it as `ServerOptions.protocol`. */
export type ProxyFactory = ((client: Connection) => Protocol) & {
  /** Proxy-specific counters. */
  readonly counters: ProxyCounters;
  /** Where clients are forwarded, as "host:port". */
  readonly upstream: string;
  /**
   * Closes every pair now. Closing a client closes its upstream too, except
   * where the client has already finished and its upstream is still
   * flushing: a server that stops should call this before it closes its
   * reactor (or before `Server.stop()`).
   */
  closeAll(): void;
};

/** Settings and state shared by every pair of one proxy. */
interface Shared {
  readonly host: string;
  readonly port: number;
  readonly address: string;
  readonly limits: ConnectionLimits;
  /**
   * The upstream connections' own limits: the Connection's built-in
   * backpressure (pause reading this peer when its own output is full, resume
   * at low water) would couple the two directions, and can deadlock against a
   * peer that does the same (each waits for the other to read). The proxy
   * pauses and resumes explicitly, per direction, so it is switched off here;
   * the hard cap stays.
   */
  readonly upstreamLimits: ConnectionLimits;
  readonly connectTimeoutMs: number;
  readonly flushTimeoutMs: number;
  readonly counters: ProxyCounters;
  /** Per reactor: pairs with a direction paused, re-checked before every wait. */
  readonly pressured: Map<Reactor, Set<Pair>>;
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
  #pending: OutputBuffer | null;
  #clientEof = false;
  #upstreamEof = false;
  #clientShut = false;
  #upstreamShut = false;
  /** We hold client reading paused: the upstream (or pending) side is full. */
  #holdClient = false;
  /** We hold upstream reading paused: the client's output is full. */
  #holdUpstream = false;
  /** Graceful shutdown asked: close once nothing is buffered either way. */
  #draining = false;

  constructor(shared: Shared, client: Connection) {
    this.#shared = shared;
    this.#reactor = client.reactor;
    this.client = client;
    this.#pending = new OutputBuffer(shared.limits.maxOutputBytes);
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
        reactor.register(fd, this, EPOLLOUT);
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

  ready(events: number): void {
    const fd = this.#connectFd;
    if (fd < 0) return;
    let code: number;
    try {
      code = socketError(fd);
    } catch (e) {
      code = e instanceof SyscallError ? e.errno : EIO;
    }
    if (code === 0 && (events & EPOLLERR) !== 0) code = EIO;
    if (code !== 0) {
      this.#fail(code);
      return;
    }
    this.#connected(fd);
  }

  crashed(error: unknown): void {
    log.error("upstream {upstream}: connect handler threw: {error}", {
      upstream: this.#shared.address,
      error,
    });
    this.#teardown();
  }

  #connected(fd: number): void {
    const shared = this.#shared;
    const reactor = this.#reactor;
    reactor.unregister(fd);
    this.#connectFd = -1;
    this.#cancelTimer();
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4);
    // A hang-up while this side is paused (its FIN after ours, bytes still
    // unread) is handled by Connection itself: it leaves the interest list
    // until reading resumes, then reads to the EOF.
    const upstream = new Connection(reactor, fd, this, shared.upstreamLimits);
    this.upstream = upstream;
    this.#state = State.Open;
    shared.counters.connected++;
    upstream.open();
    const pending = this.#pending!;
    this.#pending = null;
    if (pending.length > 0) {
      upstream.write(pending.pending(), 0, pending.length);
      if (this.#state !== State.Open) return; // the write failed and closed both
    }
    this.#relieve();
    if (this.#clientEof) this.#shutUpstreamIfFlushed();
    this.#finishIfDone();
  }

  #fail(code: number): void {
    if (this.#state !== State.Connecting) return;
    const shared = this.#shared;
    const counters = shared.counters;
    counters.connectFailures++;
    if (code === ETIMEDOUT) counters.connectTimeouts++;
    this.#logFailure(code);
    this.#cancelTimer();
    if (this.#connectFd >= 0) {
      this.#reactor.unregister(this.#connectFd);
      close(this.#connectFd);
      this.#connectFd = -1;
    }
    this.#pending = null;
    this.#state = State.Failed;
    this.#holdClient = false;
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

  data(conn: Connection, data: Uint8Array, start: number, end: number): void {
    const hwm = this.#shared.limits.highWaterMark;
    if (conn === this.client) {
      if (this.#state === State.Open) {
        const upstream = this.upstream!;
        this.#forward(upstream, data, start, end);
        if (upstream.output.length >= hwm && !upstream.closed) this.#pauseClient();
      } else if (this.#state === State.Connecting) {
        const pending = this.#pending!;
        if (!pending.append(data, start, end)) {
          // Cannot happen while the pause works; never buffer without bound.
          log.warn("upstream {upstream}: pending bytes over the cap, closing the client", {
            upstream: this.#shared.address,
          });
          this.#teardown();
          return;
        }
        if (pending.length >= hwm) this.#pauseClient();
      }
      return;
    }
    const client = this.client;
    // The client's idle timeout watches its reads only; a tunnel that only
    // downloads is not idle.
    client.lastRead = this.#reactor.now;
    this.#forward(client, data, start, end);
    if (client.closed) return;
    if (client.output.length >= hwm) this.#pauseUpstream();
    // The client's Connection also paused *its own* reading when its output
    // filled up (echo-style backpressure). Undo that: client -> upstream is
    // a separate direction, held back only by the upstream's buffer.
    if (client.readingPaused && !this.#holdClient) client.setReading(true);
  }

  end(conn: Connection): void {
    if (conn === this.client) {
      this.#clientEof = true;
      this.#holdClient = false;
      if (this.#state === State.Open) this.#shutUpstreamIfFlushed();
    } else {
      this.#upstreamEof = true;
      this.#holdUpstream = false;
      this.#shutClientIfFlushed();
    }
    this.#finishIfDone();
  }

  drained(conn: Connection): void {
    if (this.#state !== State.Open) return;
    if (conn === this.upstream) this.#shutUpstreamIfFlushed();
    else this.#shutClientIfFlushed();
    if (this.#state !== State.Open) return;
    this.#relieve();
    this.#finishIfDone();
    if (this.#draining) this.#closeIfQuiet();
  }

  closed(conn: Connection, reason: CloseReason): void {
    if (this.#state === State.Closed) return;
    const isClient = conn === this.client;
    // A side that finished both ways closes by itself (EPOLLHUP after our
    // shutdown and its FIN): the other side may still be flushing to its peer.
    const finished = isClient
      ? this.#clientEof && this.#clientShut
      : this.#upstreamEof && this.#upstreamShut;
    if (finished) {
      const other = isClient ? this.upstream : this.client;
      if (other !== null && !other.closed) {
        this.#cancelTimer();
        this.#timer = this.#reactor.setTimer(
          this.#shared.flushTimeoutMs,
          () => this.#teardown(),
        );
        this.#finishIfDone();
        return;
      }
    } else if (this.#state === State.Open) {
      const counters = this.#shared.counters;
      const other = isClient ? this.upstream! : this.client;
      if (reason === "reset" || reason === "hangup") {
        if (isClient) counters.clientErrors++;
        else counters.upstreamErrors++;
        abortive(other);
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
    this.#teardown(reason === "reset" || reason === "hangup" ? "reset" : "local");
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

  // ---- forwarding, backpressure, half-close ----

  #forward(dest: Connection, data: Uint8Array, start: number, end: number): void {
    const reactor = this.#reactor;
    // Straight from the shared read buffer by its pointer, as echo does.
    if (start === 0 && data === reactor.readBuffer) {
      dest.writeFrom(reactor.readBufferPointer, data, end);
    } else {
      dest.write(data, start, end);
    }
  }

  #pauseClient(): void {
    if (!this.#holdClient) {
      this.#holdClient = true;
      this.#markPressured();
    }
    this.client.setReading(false);
  }

  #pauseUpstream(): void {
    if (!this.#holdUpstream) {
      this.#holdUpstream = true;
      this.#markPressured();
    }
    this.upstream!.setReading(false);
  }

  #markPressured(): void {
    const pressured = this.#shared.pressured.get(this.#reactor);
    if (pressured !== undefined) pressured.add(this);
  }

  /**
   * Resumes a paused direction whose destination is down to low water, and
   * re-asserts a pause that still holds: the client's Connection resumes
   * itself when *its own* output drains, which says nothing about the
   * upstream's. Returns whether a direction is still held.
   */
  relieveCheck(): boolean {
    if (this.#state === State.Closed) return false;
    this.#relieve();
    return this.#holdClient || this.#holdUpstream;
  }

  #relieve(): void {
    const lwm = this.#shared.limits.lowWaterMark;
    if (this.#holdClient) {
      const queued = this.upstream !== null
        ? this.upstream.output.length
        : (this.#pending?.length ?? 0);
      if (queued <= lwm) {
        this.#holdClient = false;
        this.client.setReading(true);
      } else if (!this.client.readingPaused) {
        this.client.setReading(false);
      }
    }
    if (this.#holdUpstream && this.upstream !== null) {
      if (this.client.output.length <= lwm) {
        this.#holdUpstream = false;
        this.upstream.setReading(true);
      } else if (!this.upstream.readingPaused) {
        this.upstream.setReading(false);
      }
    }
  }

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
    if (shutdown(conn.fd, SHUT_WR) < 0) {
      // ENOTCONN: the peer is already gone; the close path cleans up.
      log.debug("shutdown(SHUT_WR) on fd {fd}: {code}", { fd: conn.fd, code: errnoName(errno()) });
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
    const client = this.client;
    this.#teardown("shutdown", false);
    client.closeAfterFlush();
  }

  #cancelTimer(): void {
    if (this.#timer !== null) {
      this.#reactor.cancelTimer(this.#timer);
      this.#timer = null;
    }
  }

  /** Closes both connections (and a connect in flight) now. */
  close(): void {
    this.#teardown();
  }

  /**
   * Closes everything this pair holds (the client too unless `closeClient`
   * is false). Idempotent.
   */
  #teardown(reason: CloseReason = "local", closeClient = true): void {
    if (this.#state === State.Closed) return;
    this.#state = State.Closed;
    this.#shared.counters.active--;
    this.#shared.pairs.delete(this);
    this.#cancelTimer();
    this.#shared.pressured.get(this.#reactor)?.delete(this);
    if (this.#connectFd >= 0) {
      this.#reactor.unregister(this.#connectFd);
      close(this.#connectFd);
      this.#connectFd = -1;
    }
    this.#pending = null;
    if (closeClient) this.client.close(reason);
    this.upstream?.close(reason);
  }
}

/**
 * Creates a TCP proxy to `upstream`: a protocol factory for
 * `ServerOptions.protocol` that gives each client its own upstream
 * connection on the client's reactor.
 *
 * `reactor` may be null: `Server.start` creates its reactor after it takes
 * the factory, and each client brings its own anyway. Proxy-specific
 * counters are on the returned factory (`.counters`).
 */
export function createProxy(
  reactor: Reactor | null,
  upstream: { host: string; port: number },
  opts: ProxyOptions = {},
): ProxyFactory {
  resolveHost(upstream.host); // a bad address fails here, not once per client
  const limits = opts.limits ?? DEFAULT_LIMITS;
  const shared: Shared = {
    host: upstream.host,
    port: upstream.port,
    address: formatAddress(upstream.host, upstream.port),
    limits,
    upstreamLimits: {
      highWaterMark: Infinity,
      lowWaterMark: -1,
      maxOutputBytes: limits.maxOutputBytes,
    },
    connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
    flushTimeoutMs: opts.flushTimeoutMs ?? 30_000,
    counters: new ProxyCounters(),
    pressured: new Map(),
    pairs: new Set(),
    lastFailureLog: -Infinity,
    failuresNotLogged: 0,
  };
  const watch = (r: Reactor) => {
    if (shared.pressured.has(r)) return;
    const pressured = new Set<Pair>();
    shared.pressured.set(r, pressured);
    // Before every wait: resume directions that drained to low water (the
    // `drained` hook only fires at zero) and re-pause clients that resumed
    // themselves. Costs a size check when nothing is held back.
    r.beforeWait(() => {
      if (pressured.size === 0) return;
      for (const pair of pressured) {
        if (!pair.relieveCheck()) pressured.delete(pair);
      }
    });
  };
  if (reactor !== null) watch(reactor);
  const factory = (client: Connection): Protocol => {
    watch(client.reactor);
    const pair = new Pair(shared, client);
    pair.start();
    return pair;
  };
  const closeAll = () => {
    for (const pair of [...shared.pairs]) pair.close();
  };
  return Object.assign(factory, { counters: shared.counters, upstream: shared.address, closeAll });
}
