/**
 * What every connection on one reactor shares: one read buffer (reads never
 * allocate), the counters, the buffer limits and the timeouts. The reactor
 * knows none of this; it belongs to the connection layer.
 *
 * @module
 */

import type { Reactor } from "../reactor/reactor.ts";
import type { IoUringStreams } from "../reactor/io_uring_streams.ts";

/** Connection timeouts in milliseconds; 0 turns one off. */
export interface Timeouts {
  /** No request in progress and nothing moved either way for this long: close. */
  idleMs: number;
  /** A request (head, or body) not complete this long after its first byte. */
  requestMs: number;
  /** Output pending and not a byte accepted by the peer for this long. */
  writeMs: number;
}

/** Defaults: idle 60 s, request (header) 10 s, stalled write 30 s (the CLI's too). */
export const DEFAULT_TIMEOUTS: Timeouts = { idleMs: 60_000, requestMs: 10_000, writeMs: 30_000 };

/** Buffer limits of a connection. */
export interface ConnectionLimits {
  /**
   * Output bytes waiting (the kernel's buffer is full) at which the protocol
   * is told to stop producing (`Protocol.highWater`; by default reading from
   * the peer pauses).
   */
  highWaterMark: number;
  /** Output bytes at which it is told it may go on (`Protocol.lowWater`). */
  lowWaterMark: number;
  /**
   * How much a writer may go on writing after `write` returned false (the
   * output at high water) before the connection closes ("overflow"): a
   * writer that ignores backpressure is bounded. One large write, of any
   * size, is never cut; a peer that takes nothing is caught by the write
   * timeout.
   */
  maxOutputBytes: number;
}

/**
 * Defaults: stop producing at 64 KiB waiting, go on at 16 KiB, close at
 * 16 MiB. Small marks keep a peer that never reads cheap (200 such clients
 * cost about as much as under nginx); the kernel's socket buffer, far
 * larger, keeps a peer that reads busy between the two.
 */
export const DEFAULT_LIMITS: ConnectionLimits = {
  highWaterMark: 64 << 10,
  lowWaterMark: 16 << 10,
  maxOutputBytes: 16 << 20,
};

/** Counters of the connection layer; tests read them, /metrics shows them. */
export class ConnectionCounters {
  /** Connections accepted. */
  accepted = 0;
  /** Connections closed (by either side). */
  closed = 0;
  /** Bytes received from peers. */
  bytesIn = 0;
  /** Bytes sent to peers. */
  bytesOut = 0;
  /** Times writable interest was armed because a send could not take everything. */
  writableArms = 0;
  /** Times it was disarmed because the output buffer drained. */
  writableDisarms = 0;
  /** Sends that returned EAGAIN or took only part of the bytes. */
  sendEagain = 0;
  /** The most bytes one connection has had waiting in its output buffer. */
  peakOutputBytes = 0;
  /**
   * Times a paused connection saw a hang-up with unread bytes (our FIN sent,
   * the peer's arrived) and left the interest list until reading resumes.
   */
  hangupParks = 0;
  /** Bytes sent from files by sendfile(2) (part of bytesOut). */
  fileBytesOut = 0;
  /** File ranges cut short because the file shrank while being sent (connection reset). */
  fileTruncations = 0;
  /** Times reading from a peer was paused (backpressure). */
  readPauses = 0;
  /** Times a connection's output reached its high-water mark. */
  highWaterHits = 0;
  /** Connections closed by a timeout (idle, request, stalled write). */
  timeouts = 0;
  /** Connections closed because the writer ignored backpressure and the peer did not read. */
  overflows = 0;
  /** Times accepting paused at the connection cap. */
  connectionLimitHits = 0;
  /** accept() failures for lack of fds (EMFILE/ENFILE) or memory. */
  acceptLimitHits = 0;
  /** accept() errors retried (network errors accept(2) says to retry, and unknown ones). */
  acceptErrors = 0;
  /** Connections closed because their protocol threw. */
  protocolErrors = 0;

  /** A plain object copy, for logs and JSON. */
  snapshot(): Record<string, number> {
    return Object.fromEntries(Object.entries(this));
  }
}

/** Settings of a `ConnectionContext`. */
export interface ConnectionContextOptions {
  /** Buffer limits. Default `DEFAULT_LIMITS`. */
  limits?: ConnectionLimits;
  /** Timeouts; null: none. Default `DEFAULT_TIMEOUTS`. */
  timeouts?: Timeouts | null;
  /** Size of the shared read buffer. Default 64 KiB. */
  readBufferSize?: number;
}

/** The state every connection of one reactor shares. */
export class ConnectionContext {
  /** The event loop the connections live on. */
  readonly reactor: Reactor;
  /** Counters for every connection of this context. */
  readonly counters: ConnectionCounters = new ConnectionCounters();
  /** One read buffer for every connection: reads never allocate. */
  readonly readBuffer: Uint8Array;
  /** The address of `readBuffer`, taken once, for pointer-typed FFI calls. */
  readonly readBufferPointer: Deno.PointerObject;
  /** Buffer limits. */
  readonly limits: ConnectionLimits;
  /** Timeouts for connections opened without their own; null: none. */
  readonly timeouts: Timeouts | null;
  /**
   * Where a corked connection's writes gather before its one `send`
   * (`Connection.cork`): shared, since one connection at a time is corked
   * (the one whose bytes are being handled), so batches allocate nothing.
   */
  readonly corkBuffer: Uint8Array = new Uint8Array(64 << 10);
  /** The address of `corkBuffer`, taken once. */
  readonly corkBufferPointer: Deno.PointerObject = Deno.UnsafePointer.of(this.corkBuffer)!;
  /** The connection holding `corkBuffer` now, or null. */
  corkOwner: object | null = null;
  /**
   * Completion-based I/O when the reactor runs on io_uring with streams
   * (reactor/io_uring_streams.ts): connections then receive and send
   * through it instead of recv(2)/send(2). Null on every other backend.
   */
  readonly streams: IoUringStreams | null;

  /**
   * Allocates the shared read buffer and checks the limits.
   *
   * @param reactor the loop the connections will live on
   * @param options limits, timeouts, read buffer size
   */
  constructor(reactor: Reactor, options: ConnectionContextOptions = {}) {
    this.reactor = reactor;
    this.limits = options.limits ?? DEFAULT_LIMITS;
    const { highWaterMark, lowWaterMark, maxOutputBytes } = this.limits;
    if (!(lowWaterMark < highWaterMark && highWaterMark <= maxOutputBytes)) {
      throw new RangeError(
        `Cannot use limits: need lowWaterMark < highWaterMark <= maxOutputBytes, got ${lowWaterMark}, ${highWaterMark}, ${maxOutputBytes}`,
      );
    }
    this.timeouts = options.timeouts === undefined ? DEFAULT_TIMEOUTS : options.timeouts;
    this.readBuffer = new Uint8Array(options.readBufferSize ?? 65536);
    this.readBufferPointer = Deno.UnsafePointer.of(this.readBuffer)!;
    this.streams = reactor.backend.streams ?? null;
  }
}
