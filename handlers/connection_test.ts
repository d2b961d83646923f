/**
 * Connection on a real reactor and a real loopback TCP pair: one end is the
 * Connection, the other (the "peer") is read and written by the test with
 * nonblocking recv/send, usually from a plain handler on the same reactor.
 *
 * Outcomes are decided by events and counters, never by how long something
 * took: every wait is bounded generously and fails the test instead of
 * hanging it, and "the loop turned N more times" is N reactor timers fired
 * one after the other.
 */
import assert from "node:assert/strict";
import { Interest } from "../reactor/interest.ts";
import { type Handler, Reactor, type ReactorOptions } from "../reactor/reactor.ts";
import { MSG_DONTWAIT, SHUT_WR, SO_RCVBUF, SO_SNDBUF, SOL_SOCKET } from "../syscalls/constants.ts";
import { EAGAIN, ECONNRESET, errnoName } from "../syscalls/errno.ts";
import { close, errno, recv, send, shutdown } from "../syscalls/libc.ts";
import { setIntOption } from "../syscalls/socket.ts";
import { openBeneath, openDirectory } from "../syscalls/files.ts";
import { type CloseReason, Connection, type FileSource, type Protocol } from "./connection.ts";
import {
  ConnectionContext,
  type ConnectionContextOptions,
  type ConnectionLimits,
  DEFAULT_LIMITS,
} from "./context.ts";
import { turns, until, within } from "../tests/support/net.ts";
import { tcpPair } from "../tests/support/tcp_pair.ts";

const MiB = 1 << 20;
const CHUNK = 64 << 10;

/** Bytes of a stream: byte i is a function of i (period 251, a prime). */
function bytes(length: number, offset = 0): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (offset + i) % 251;
  return out;
}

/**
 * Small kernel buffers on both sides, so "the peer does not read" fills them
 * after a few hundred KB instead of several MB (Linux doubles the values).
 */
function smallKernelBuffers(ours: number, peer: number): void {
  setIntOption(ours, SOL_SOCKET, SO_SNDBUF, 32 << 10);
  setIntOption(peer, SOL_SOCKET, SO_RCVBUF, 32 << 10);
}

/** Reads the peer end steadily (to EAGAIN on every event), checking bytes against `expected`. */
class PeerReader implements Handler {
  received = 0;
  eof = false;
  error = 0;
  /** The offset of the first byte that differed from `expected`, or -1. */
  mismatchAt = -1;
  readonly #buf = new Uint8Array(256 << 10);

  constructor(
    readonly reactor: Reactor,
    readonly fd: number,
    readonly expected: Uint8Array | null = null,
  ) {}

  start(): this {
    this.reactor.register(this.fd, this, Interest.READABLE);
    return this;
  }

  ready(): void {
    const buf = this.#buf;
    for (;;) {
      const n = recv(this.fd, buf, buf.length, 0);
      if (n > 0) {
        const expected = this.expected;
        if (expected !== null && this.mismatchAt < 0) {
          for (let i = 0; i < n; i++) {
            if (buf[i] !== expected[this.received + i]) {
              this.mismatchAt = this.received + i;
              break;
            }
          }
        }
        this.received += n;
        continue;
      }
      if (n < 0 && errno() === EAGAIN) return;
      if (n < 0) this.error = errno();
      else this.eof = true;
      this.reactor.deregister(this.fd);
      return;
    }
  }
}

/** A reactor, a context, and what to release at the end. */
class Rig {
  readonly fds: number[] = [];
  readonly conns: Connection[] = [];
  running: Promise<void> | null = null;

  private constructor(readonly reactor: Reactor, readonly ctx: ConnectionContext) {}

  static async create(
    options: ConnectionContextOptions = {},
    reactorOptions: ReactorOptions = {},
  ): Promise<Rig> {
    const reactor = await Reactor.create(reactorOptions);
    return new Rig(reactor, new ConnectionContext(reactor, { timeouts: null, ...options }));
  }

  /** An open Connection on one end of a fresh loopback pair; returns it and the peer fd. */
  async connect(
    protocol: Protocol,
    onClose: ((conn: Connection, reason: CloseReason) => void) | null = null,
  ): Promise<{ conn: Connection; peer: number }> {
    const pair = await tcpPair();
    close(pair.listener);
    const { fd: ours, peer } = pair;
    this.fds.push(peer);
    const conn = new Connection(this.ctx, ours, protocol, onClose);
    this.conns.push(conn);
    conn.open();
    return { conn, peer };
  }

  run(): void {
    this.running = this.reactor.run();
  }

  async dispose(): Promise<void> {
    this.reactor.stop();
    if (this.running) await within(this.running, "run() to resolve after stop()");
    for (const conn of this.conns) conn.close("shutdown");
    for (const fd of this.fds) close(fd);
    this.reactor.close();
  }
}

/** The first `length` bytes the peer fd receives (waits for them). */
async function peerReceives(peer: number, length: number): Promise<Uint8Array> {
  const got = new Uint8Array(length);
  let n = 0;
  await until(() => {
    const k = recv(peer, got.subarray(n), length - n, MSG_DONTWAIT);
    if (k > 0) n += k;
    return n >= length;
  }, `${length} bytes at the peer`);
  return got;
}

/** Writes `chunk`-sized pieces of `data` from `offset` until write() returns false; returns the new offset. */
function writeUntilFull(conn: Connection, data: Uint8Array, offset: number, chunk = CHUNK): number {
  while (offset < data.length) {
    const end = Math.min(offset + chunk, data.length);
    const more = conn.write(data, offset, end);
    offset = end;
    if (!more) return offset;
  }
  throw new Error(`write() never returned false in ${data.length} bytes`);
}

Deno.test("Connection: a single 40 MB write to a peer that reads steadily arrives whole and byte-exact (more than maxOutputBytes is never cut)", async () => {
  const rig = await Rig.create({ limits: DEFAULT_LIMITS });
  try {
    const total = 40 * MiB;
    const data = bytes(total);
    let drained = 0;
    let closedWith: CloseReason | null = null;
    const { conn, peer } = await rig.connect({
      data() {},
      drained: () => drained++,
      closed: (_, reason) => (closedWith = reason),
    });
    const t0 = performance.now();
    const more = conn.write(data);
    assert.equal(more, false, "40 MB cannot all go at once: high water reached");
    assert.equal(conn.closed, false, "not cut");
    assert.ok(
      conn.output.length > DEFAULT_LIMITS.maxOutputBytes,
      `more than maxOutputBytes waits (${conn.output.length} bytes): the old code cut here`,
    );
    const reader = new PeerReader(rig.reactor, peer, data).start();
    rig.run();
    await until(
      () => reader.received >= total || reader.eof || reader.error !== 0,
      "the peer to read 40 MB",
      60_000,
    );
    console.log(`40 MB through loopback in ${(performance.now() - t0).toFixed(0)} ms`);
    assert.equal(reader.error, 0, `peer recv failed: ${errnoName(reader.error)}`);
    assert.equal(reader.eof, false);
    assert.equal(reader.received, total);
    assert.equal(reader.mismatchAt, -1, `byte ${reader.mismatchAt} differs`);
    assert.equal(closedWith, null);
    assert.equal(conn.closed, false);
    assert.equal(conn.output.length, 0);
    assert.equal(conn.output.capacity, 0, "the drained buffer was released");
    assert.ok(drained >= 1, "drained() ran");
    assert.equal(rig.ctx.counters.overflows, 0);
    assert.equal(rig.ctx.counters.bytesOut, total);
    assert.ok(rig.ctx.counters.peakOutputBytes > DEFAULT_LIMITS.maxOutputBytes);
  } finally {
    await rig.dispose();
  }
});

/**
 * Marks far above what one flush can move through the small kernel buffers
 * (a few hundred KB at most), so "fell to low water" and "emptied" are
 * different moments.
 */
const MARKS: ConnectionLimits = {
  highWaterMark: 2 * MiB,
  lowWaterMark: 1 * MiB,
  maxOutputBytes: 256 * MiB,
};

Deno.test("Connection: write() returns false at high water and highWater fires once; lowWater fires once at low water and whenWritable() resolves", async () => {
  const rig = await Rig.create({ limits: MARKS });
  try {
    const events: string[] = [];
    let outputAtLow = -1;
    const { conn, peer } = await rig.connect({
      data() {},
      highWater: () => events.push("high"),
      lowWater: (c) => {
        events.push("low");
        outputAtLow = c.output.length;
      },
    });
    smallKernelBuffers(conn.fd, peer);
    rig.run();
    const data = bytes(64 * MiB);
    let written = writeUntilFull(conn, data, 0);
    assert.ok(conn.output.length >= MARKS.highWaterMark, `${conn.output.length} waiting`);
    assert.deepEqual(events, ["high"]);
    assert.equal(conn.outputFull, true);
    const beforeLast = conn.output.length;
    assert.equal(conn.write(data, written, written + CHUNK), false, "still false above high water");
    written += CHUNK;
    assert.equal(conn.output.length, beforeLast + CHUNK, "and the bytes were taken");
    assert.deepEqual(events, ["high"], "highWater fired once");
    assert.equal(
      conn.readingPaused,
      false,
      "with a highWater hook, reading is the protocol's call",
    );
    assert.equal(rig.ctx.counters.readPauses, 0);

    let writable = false;
    const whenWritable = conn.whenWritable().then(() => {
      writable = true;
      events.push("writable");
    });
    await turns(rig.reactor, 5); // the peer does not read: nothing moves
    assert.equal(writable, false, "whenWritable() waits while the peer does not read");
    assert.deepEqual(events, ["high"]);

    const reader = new PeerReader(rig.reactor, peer, data).start();
    await within(whenWritable, "whenWritable() once the peer reads");
    assert.deepEqual(events, ["high", "low", "writable"]);
    assert.ok(
      outputAtLow > 0 && outputAtLow <= MARKS.lowWaterMark,
      `lowWater ran with ${outputAtLow} bytes waiting: not as it fell to low water`,
    );
    assert.equal(conn.outputFull, false);
    await until(() => reader.received >= written || reader.eof, "the peer to read everything");
    assert.equal(reader.received, written);
    assert.equal(reader.mismatchAt, -1, `byte ${reader.mismatchAt} differs`);
    assert.deepEqual(events, ["high", "low", "writable"], "each fired once");
    assert.equal(rig.ctx.counters.highWaterHits, 1);
    assert.equal(conn.closed, false);
  } finally {
    await rig.dispose();
  }
});

Deno.test("Connection: without highWater/lowWater hooks, reading pauses at high water and resumes at low water", async () => {
  const rig = await Rig.create({ limits: MARKS });
  try {
    let got = "";
    let outputWhenRead = -1;
    const { conn, peer } = await rig.connect({
      data(c, buf, start, end) {
        got += new TextDecoder().decode(buf.subarray(start, end));
        outputWhenRead = c.output.length;
      },
    });
    smallKernelBuffers(conn.fd, peer);
    rig.run();
    const data = bytes(64 * MiB);
    const written = writeUntilFull(conn, data, 0);
    assert.equal(conn.readingPaused, true, "paused at high water");
    assert.equal(rig.ctx.counters.readPauses, 1);

    const hello = new TextEncoder().encode("hello");
    assert.equal(send(peer, hello, hello.length, 0), hello.length);
    await turns(rig.reactor, 5);
    assert.equal(got, "", "nothing read while paused, though bytes wait");

    const reader = new PeerReader(rig.reactor, peer, data).start();
    await until(() => got === "hello", "the paused bytes to be read after low water");
    assert.ok(
      outputWhenRead <= MARKS.lowWaterMark,
      `read again with ${outputWhenRead} bytes still waiting (low water ${MARKS.lowWaterMark})`,
    );
    assert.equal(conn.readingPaused, false);
    assert.equal(rig.ctx.counters.readPauses, 1, "paused once");
    await until(() => reader.received >= written || reader.eof, "the peer to read everything");
    assert.equal(reader.received, written);
    assert.equal(reader.mismatchAt, -1);
  } finally {
    await rig.dispose();
  }
});

const SMALL_MAX: ConnectionLimits = {
  highWaterMark: 64 << 10,
  lowWaterMark: 16 << 10,
  maxOutputBytes: 1 * MiB,
};

Deno.test('Connection: a writer that keeps writing while maxOutputBytes wait for a peer that does not read is closed with "overflow" (one large write alone is taken whole)', async () => {
  const rig = await Rig.create({ limits: SMALL_MAX });
  try {
    const reasons: CloseReason[] = [];
    const { conn, peer } = await rig.connect({ data() {}, closed: (_, r) => reasons.push(r) });
    smallKernelBuffers(conn.fd, peer);
    rig.run();
    // One write of 4x maxOutputBytes is taken whole...
    const big = bytes(4 * MiB);
    assert.equal(conn.write(big), false);
    assert.equal(conn.closed, false, "one large write is not cut");
    assert.ok(conn.output.length > SMALL_MAX.maxOutputBytes, `${conn.output.length} waiting`);
    await turns(rig.reactor, 3);
    assert.equal(conn.closed, false);
    assert.deepEqual(reasons, []);
    // ...but writing on while that much waits (write() keeps saying false)
    // ignores backpressure, and is cut within maxOutputBytes more.
    let more = 0;
    while (!conn.closed && more <= 8 * MiB) {
      assert.equal(conn.write(big, 0, 1024), false);
      more += 1024;
    }
    assert.deepEqual(reasons, ["overflow"]);
    assert.ok(more <= SMALL_MAX.maxOutputBytes + 1024, `cut after ${more} more bytes`);
    assert.equal(rig.ctx.counters.overflows, 1);
    assert.ok(conn.unsentAtClose >= 4 * MiB - (1 * MiB), `${conn.unsentAtClose} never sent`);
    assert.equal(conn.write(big, 0, 10), false, "a closed connection takes nothing");
  } finally {
    await rig.dispose();
  }
});

Deno.test('Connection: small writes that ignore write()\'s false are cut with "overflow", not before maxOutputBytes wait and not long after', async () => {
  const rig = await Rig.create({ limits: SMALL_MAX });
  try {
    const reasons: CloseReason[] = [];
    let waitingAtClose = -1;
    const { conn, peer } = await rig.connect({ data() {}, closed: (_, r) => reasons.push(r) });
    smallKernelBuffers(conn.fd, peer);
    rig.run();
    const data = bytes(CHUNK);
    for (let i = 0; i < 10_000 && !conn.closed; i++) {
      waitingAtClose = conn.output.length;
      conn.write(data);
    }
    assert.deepEqual(reasons, ["overflow"]);
    assert.ok(
      waitingAtClose >= SMALL_MAX.maxOutputBytes,
      `cut with ${waitingAtClose} bytes waiting, under maxOutputBytes`,
    );
    assert.ok(
      waitingAtClose <= SMALL_MAX.highWaterMark + SMALL_MAX.maxOutputBytes + CHUNK,
      `cut only with ${waitingAtClose} bytes waiting`,
    );
  } finally {
    await rig.dispose();
  }
});

Deno.test("Connection: a writer that waits for whenWritable() after each false, even one write late, is never cut, however much it writes in all", async () => {
  const rig = await Rig.create({ limits: SMALL_MAX });
  try {
    const reasons: CloseReason[] = [];
    const { conn, peer } = await rig.connect({ data() {}, closed: (_, r) => reasons.push(r) });
    smallKernelBuffers(conn.fd, peer);
    const total = 16 * SMALL_MAX.maxOutputBytes;
    const data = bytes(total);
    const reader = new PeerReader(rig.reactor, peer, data).start();
    rig.run();
    let offset = 0;
    let waits = 0;
    let late = false;
    while (offset < total && !conn.closed) {
      const end = Math.min(offset + CHUNK, total);
      const more = conn.write(data, offset, end);
      offset = end;
      if (!more && !late && offset < total) {
        late = true; // one more piece past the stop, as a sloppy writer would
        continue;
      }
      if (!more) {
        waits++;
        late = false;
        await within(conn.whenWritable(), "whenWritable()");
      }
    }
    await until(() => reader.received >= total || reader.eof, "the peer to read everything");
    assert.deepEqual(reasons, []);
    assert.equal(reader.received, total);
    assert.equal(reader.mismatchAt, -1);
    // Each late piece alone is well under maxOutputBytes, all of them together far over it.
    assert.ok(waits * CHUNK > 4 * SMALL_MAX.maxOutputBytes, `write() said stop ${waits} times`);
    assert.equal(rig.ctx.counters.overflows, 0);
  } finally {
    await rig.dispose();
  }
});

Deno.test("Connection: close() inside a handler runs Protocol.closed in the deferred phase, after the handler returned, exactly once, with the reason", async () => {
  const rig = await Rig.create();
  try {
    const order: string[] = [];
    const waitsAt: number[] = [];
    rig.reactor.beforeWait(() => {
      if (order.length > 0 && !order.includes("wait")) order.push("wait");
    });
    const { conn, peer } = await rig.connect({
      data(c) {
        order.push("data start");
        waitsAt.push(rig.reactor.counters.waits);
        c.close("local");
        order.push(`fd after close: ${c.fd}`);
        c.close("error"); // idempotent: the first reason stands
        order.push("data end");
      },
      closed(_, reason) {
        order.push(`closed: ${reason}`);
        waitsAt.push(rig.reactor.counters.waits);
      },
    }, (_, reason) => order.push(`listener: ${reason}`));
    rig.run();
    send(peer, new Uint8Array(1), 1, 0);
    await until(() => order.includes("wait"), "the wait after the close");
    await turns(rig.reactor, 3);
    conn.close("timeout"); // and once more from outside
    assert.deepEqual(order, [
      "data start",
      "fd after close: -1",
      "data end",
      "closed: local",
      "listener: local",
      "wait",
    ]);
    assert.equal(waitsAt[0], waitsAt[1], "closed() ran before the next wait");
    assert.equal(rig.ctx.counters.closed, 1);
    assert.equal(rig.reactor.isRegistered(peer), false);
  } finally {
    await rig.dispose();
  }
});

Deno.test("Connection: close() from outside the loop runs Protocol.closed before it returns", async () => {
  const rig = await Rig.create();
  try {
    const order: string[] = [];
    const { conn } = await rig.connect({
      data() {},
      closed: (_, reason) => order.push(`closed: ${reason}`),
    });
    rig.run();
    await turns(rig.reactor, 2);
    conn.close("shutdown");
    order.push("close() returned");
    assert.deepEqual(order, ["closed: shutdown", "close() returned"]);
  } finally {
    await rig.dispose();
  }
});

Deno.test("Connection: closing connection A from inside B's data() does not run A's closed() before B's data() returns", async () => {
  const rig = await Rig.create();
  try {
    const order: string[] = [];
    const a = await rig.connect({
      data() {},
      closed: (_, reason) => order.push(`A closed: ${reason}`),
    });
    const b = await rig.connect({
      data() {
        order.push("B data start");
        a.conn.close("local");
        order.push(`B sees A closed: ${a.conn.closed}`);
        order.push("B data end");
      },
      closed: (_, reason) => order.push(`B closed: ${reason}`),
    });
    rig.run();
    send(b.peer, new Uint8Array(1), 1, 0);
    await until(() => order.length >= 4, "A's closed()");
    await turns(rig.reactor, 3);
    assert.deepEqual(order, [
      "B data start",
      "B sees A closed: true",
      "B data end",
      "A closed: local",
    ]);
    assert.equal(b.conn.closed, false);
  } finally {
    await rig.dispose();
  }
});

/** Reads the peer until something other than EAGAIN: returns recv's result and errno. */
async function peerOutcome(fd: number): Promise<{ n: number; errno: number }> {
  const buf = new Uint8Array(1024);
  let outcome: { n: number; errno: number } | null = null;
  await until(() => {
    const n = recv(fd, buf, buf.length, 0);
    const e = n < 0 ? errno() : 0;
    if (n < 0 && e === EAGAIN) return false;
    outcome = { n, errno: e };
    return true;
  }, "the peer to see the end");
  return outcome!;
}

Deno.test("Connection: abort() makes the peer see ECONNRESET (RST) where close() gives it EOF", async () => {
  const rig = await Rig.create();
  try {
    const reasons: CloseReason[] = [];
    const aborted = await rig.connect({ data() {}, closed: (_, r) => reasons.push(r) });
    const closed = await rig.connect({ data() {}, closed: (_, r) => reasons.push(r) });
    rig.run();
    await turns(rig.reactor, 2);
    aborted.conn.abort();
    closed.conn.close();
    const rst = await peerOutcome(aborted.peer);
    assert.equal(rst.n, -1);
    assert.equal(rst.errno, ECONNRESET, `abort: the peer got ${errnoName(rst.errno)}`);
    const fin = await peerOutcome(closed.peer);
    assert.deepEqual(fin, { n: 0, errno: 0 }, "close: a plain EOF");
    assert.deepEqual(reasons, ["reset", "local"]);
  } finally {
    await rig.dispose();
  }
});

Deno.test('Connection: a protocol whose data() throws closes that connection with "error" and counts it', async () => {
  const rig = await Rig.create();
  try {
    const reasons: CloseReason[] = [];
    let otherGot = 0;
    const bad = await rig.connect({
      data() {
        throw new Error("protocol bug");
      },
      closed: (_, r) => reasons.push(r),
    });
    const good = await rig.connect({ data: (_c, _b, start, end) => (otherGot += end - start) });
    rig.run();
    send(bad.peer, new Uint8Array(1), 1, 0);
    await until(() => reasons.length > 0, "the failing connection to close");
    assert.deepEqual(reasons, ["error"]);
    assert.equal(bad.conn.closed, true);
    assert.equal(rig.ctx.counters.protocolErrors, 1);
    assert.equal(rig.reactor.counters.handlerErrors, 1);
    const end = await peerOutcome(bad.peer);
    assert.equal(end.n, 0, "the peer sees the connection end");
    send(good.peer, new Uint8Array(3), 3, 0);
    await until(() => otherGot === 3, "the other connection still served");
    await turns(rig.reactor, 2);
    assert.deepEqual(reasons, ["error"], "closed once");
  } finally {
    await rig.dispose();
  }
});

Deno.test("Connection: the idle timeout closes an idle connection but not one whose reading we paused; resumeReading() restarts its idle clock", async () => {
  const idleMs = 150;
  const rig = await Rig.create({ timeouts: { idleMs, requestMs: 0, writeMs: 0 } });
  try {
    const closedAt = new Map<string, { reason: CloseReason; at: number }>();
    const protocol = (name: string): Protocol => ({
      data() {},
      closed: (c, reason) => closedAt.set(name, { reason, at: c.reactor.now }),
    });
    const paused = await rig.connect(protocol("paused")); // opened first: its deadline is the earliest
    paused.conn.pauseReading();
    const idle = await rig.connect(protocol("idle"));
    const t0 = performance.now();
    rig.run();
    await until(() => closedAt.has("idle"), "the idle connection to time out");
    assert.equal(closedAt.get("idle")!.reason, "timeout");
    // One more full idle period, measured by a connection opened now.
    const later = await rig.connect(protocol("later"));
    await until(() => closedAt.has("later"), "a later idle connection to time out");
    assert.equal(closedAt.get("later")!.reason, "timeout");
    assert.equal(paused.conn.closed, false, "the paused connection outlived two idle periods");
    assert.equal(rig.ctx.counters.timeouts, 2);
    assert.ok(idle.conn.closed && later.conn.closed);

    // Resume from inside the loop (a reactor timer), where reactor.now is current.
    let resumedAt = -1;
    rig.reactor.setTimer(1, () => {
      paused.conn.resumeReading();
      resumedAt = rig.reactor.now;
    });
    await until(() => closedAt.has("paused"), "the resumed connection to time out");
    const { reason, at } = closedAt.get("paused")!;
    assert.equal(reason, "timeout");
    const afterResume = at - resumedAt;
    console.log(
      `idle ${idleMs} ms: resumed connection closed ${afterResume.toFixed(1)} ms after resuming, ` +
        `${(performance.now() - t0).toFixed(0)} ms after start`,
    );
    assert.ok(
      afterResume >= idleMs,
      `closed ${afterResume.toFixed(1)} ms after resuming: the idle clock did not restart`,
    );
    assert.ok(afterResume < 10_000);
    assert.equal(rig.ctx.counters.timeouts, 3);
  } finally {
    await rig.dispose();
  }
});

/** A temp file holding `data`, opened read-only beneath its directory (also open). */
async function tempFile(data: Uint8Array): Promise<{ fd: number; path: string; dir: number }> {
  const path = await Deno.makeTempFile({ prefix: "reactor-sendfile-" });
  await Deno.writeFile(path, data);
  const slash = path.lastIndexOf("/");
  const dir = openDirectory(path.slice(0, slash));
  const fd = openBeneath(dir, new TextEncoder().encode(path.slice(slash + 1) + "\0"), true);
  assert.ok(fd >= 0, `open ${path}: ${errnoName(-fd)}`);
  return { fd, path, dir };
}

/** Closes what `tempFile` opened and deletes the file. */
async function removeTempFile(file: { fd: number; path: string; dir: number }): Promise<void> {
  close(file.fd);
  close(file.dir);
  await Deno.remove(file.path);
}

class CountingSource implements FileSource {
  released = 0;
  constructor(readonly fd: number) {}
  release(): void {
    this.released++;
  }
}

Deno.test("Connection: sendFile interleaves with writes in order, byte-exact, through EAGAIN; each source released once", async () => {
  const rig = await Rig.create({ limits: MARKS });
  const fileData = bytes(3 * MiB, 7);
  const file = await tempFile(fileData);
  try {
    const { conn, peer } = await rig.connect({ data() {} });
    smallKernelBuffers(conn.fd, peer);
    const enc = new TextEncoder();
    const parts: Uint8Array[] = [];
    const a = new CountingSource(file.fd);
    const b = new CountingSource(file.fd);
    conn.write(enc.encode("HEAD1\r\n"));
    parts.push(enc.encode("HEAD1\r\n"));
    conn.sendFile(a, 0, fileData.length);
    parts.push(fileData);
    conn.write(enc.encode("MIDDLE"));
    parts.push(enc.encode("MIDDLE"));
    conn.sendFile(b, 1000, 5000); // a range in the middle
    parts.push(fileData.subarray(1000, 6000));
    conn.write(enc.encode("TAIL"));
    parts.push(enc.encode("TAIL"));
    const expected = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) (expected.set(p, at), at += p.length);
    assert.ok(conn.pendingBytes > 0, "the small kernel buffer cannot take 3 MiB at once");
    assert.equal(a.released, 0, "a file range still waiting is not released");
    const reader = new PeerReader(rig.reactor, peer, expected).start();
    rig.run();
    await until(() => reader.received >= expected.length || reader.eof, "the peer to read it all");
    assert.equal(reader.received, expected.length);
    assert.equal(reader.mismatchAt, -1, `byte ${reader.mismatchAt} differs`);
    await until(() => conn.pendingBytes === 0, "nothing pending");
    assert.equal(a.released, 1);
    assert.equal(b.released, 1);
    assert.equal(rig.ctx.counters.fileBytesOut, fileData.length + 5000);
    assert.ok(rig.ctx.counters.sendEagain > 0, "the file went out over several writable events");
    assert.equal(conn.closed, false);
  } finally {
    await removeTempFile(file);
    await rig.dispose();
  }
});

Deno.test("Connection: a file range counts toward high water; a file that shrinks while sent resets the connection", async () => {
  const rig = await Rig.create({ limits: { ...DEFAULT_LIMITS } });
  const fileData = bytes(8 * MiB);
  const file = await tempFile(fileData);
  try {
    let closedWith: CloseReason | null = null;
    let high = 0;
    const { conn, peer } = await rig.connect({
      data() {},
      highWater: () => high++,
      closed: (_, reason) => (closedWith = reason),
    });
    smallKernelBuffers(conn.fd, peer);
    const source = new CountingSource(file.fd);
    assert.equal(conn.sendFile(source, 0, fileData.length), false, "8 MiB waiting: stop");
    assert.equal(high, 1, "highWater fired");
    assert.ok(conn.output.length === 0, "no file byte was copied into memory");
    await Deno.truncate(file.path, 1 * MiB); // shrinks under the waiting range
    const reader = new PeerReader(rig.reactor, peer).start();
    rig.run();
    await until(() => closedWith !== null, "the connection to close");
    assert.equal(closedWith, "reset");
    assert.equal(rig.ctx.counters.fileTruncations, 1);
    assert.equal(source.released, 1);
    await until(() => reader.eof || reader.error !== 0, "the peer to see the end");
    assert.ok(reader.received <= 1 * MiB, `${reader.received} bytes: no more than the file had`);
    assert.equal(reader.error, ECONNRESET, "RST, not a clean end: the response is cut short");
  } finally {
    await removeTempFile(file);
    await rig.dispose();
  }
});

Deno.test("Connection: closing with file ranges waiting releases them and counts their bytes as unsent", async () => {
  const rig = await Rig.create({ limits: { ...DEFAULT_LIMITS } });
  const fileData = bytes(4 * MiB);
  const file = await tempFile(fileData);
  try {
    const { conn, peer } = await rig.connect({ data() {} });
    smallKernelBuffers(conn.fd, peer);
    const a = new CountingSource(file.fd);
    const b = new CountingSource(file.fd);
    conn.sendFile(a, 0, fileData.length);
    conn.write(new Uint8Array(100));
    conn.sendFile(b, 0, 1000);
    const pending = conn.pendingBytes;
    assert.ok(pending > 1100, `${pending} pending`);
    conn.close("local");
    assert.equal(a.released, 1);
    assert.equal(b.released, 1);
    assert.equal(conn.unsentAtClose, pending);
    const c = new CountingSource(file.fd);
    assert.equal(conn.sendFile(c, 0, 10), false, "closed");
    assert.equal(c.released, 1, "released even when refused");
  } finally {
    await removeTempFile(file);
    await rig.dispose();
  }
});

Deno.test("Connection: a write whose range leaves its buffer throws RangeError and sends nothing (the kernel would read past it)", async () => {
  const rig = await Rig.create();
  try {
    const { conn, peer } = await rig.connect({ data() {} });
    const data = bytes(16);
    const pointer = Deno.UnsafePointer.of(data)!;
    assert.throws(() => conn.write(data, 0, 17), RangeError);
    assert.throws(() => conn.write(data, -1, 4), RangeError);
    assert.throws(() => conn.write(data.subarray(0, 8), 0, 16), RangeError, "a view's own length");
    assert.throws(() => conn.writeFrom(pointer, data, 4096), RangeError);
    assert.equal(rig.ctx.counters.bytesOut, 0, "nothing was sent");
    assert.equal(conn.closed, false, "the connection is still usable");
    assert.equal(conn.write(data, 4, 16), true);
    assert.equal(conn.writeFrom(pointer, data, 16), true);
    assert.deepEqual(await peerReceives(peer, 28), new Uint8Array([...data.subarray(4), ...data]));
  } finally {
    await rig.dispose();
  }
});

Deno.test("Connection: bytes written in place in the cork buffer leave in order with the writes around them, in one send; no room when not corked", async () => {
  const rig = await Rig.create();
  try {
    const { conn, peer } = await rig.connect({ data() {} });
    assert.equal(conn.corkRoom(4), -1, "not corked");
    assert.throws(() => conn.corkWritten(4), RangeError);
    conn.cork();
    conn.write(bytes(3), 0, 3);
    const at = conn.corkRoom(5);
    assert.equal(at, 3, "behind the 3 bytes gathered");
    conn.context.corkBuffer.set(bytes(5, 100), at);
    conn.corkWritten(5);
    conn.write(bytes(2, 50), 0, 2);
    assert.equal(conn.corkRoom(conn.context.corkBuffer.length), -1, "not that much room");
    assert.throws(() => conn.corkWritten(conn.context.corkBuffer.length), RangeError);
    assert.equal(rig.ctx.counters.bytesOut, 0, "held until uncork");
    conn.uncork();
    assert.equal(rig.ctx.counters.bytesOut, 10, "one send of all ten");
    assert.equal(conn.corkRoom(1), -1, "uncorked");
    assert.deepEqual(
      await peerReceives(peer, 10),
      new Uint8Array([...bytes(3), ...bytes(5, 100), ...bytes(2, 50)]),
    );
  } finally {
    await rig.dispose();
  }
});

Deno.test("Connection, edge-triggered: full reads go on, a short read ends the event, later bytes raise a new edge", async () => {
  const rig = await Rig.create({ readBufferSize: 1024 }, { edge: true });
  try {
    const sizes: number[] = [];
    const { peer } = await rig.connect({
      data(_conn, _data, start, end) {
        sizes.push(end - start);
      },
    });
    const total = () => sizes.reduce((a, b) => a + b, 0);
    send(peer, bytes(5000), 5000, 0); // in the socket before the loop runs: one edge
    rig.run();
    await until(() => total() >= 5000, "5000 bytes");
    assert.deepEqual(sizes, [1024, 1024, 1024, 1024, 904], "four full reads, then the short one");
    send(peer, bytes(10), 10, 0);
    await until(() => total() >= 5010, "a new edge for 10 more bytes");
    assert.deepEqual(sizes.slice(5), [10]);
  } finally {
    await rig.dispose();
  }
});

Deno.test("Connection, edge-triggered: bytes and the peer's FIN in one edge: the short read does not end it, EOF is seen", async () => {
  const rig = await Rig.create({}, { edge: true });
  try {
    let got = 0;
    let reason: CloseReason | null = null;
    const { peer } = await rig.connect({
      data(_conn, _data, start, end) {
        got += end - start;
      },
    }, (_conn, r) => (reason = r));
    send(peer, bytes(100), 100, 0);
    shutdown(peer, SHUT_WR); // both before the loop runs: one edge with RDHUP
    rig.run();
    // Stopping at the short read would leave the FIN unread, and no later
    // edge would ever report it: the connection would hang open.
    await until(() => reason !== null, "the connection to end at the peer's FIN");
    assert.equal(got, 100);
    assert.equal(reason, "eof");
  } finally {
    await rig.dispose();
  }
});
