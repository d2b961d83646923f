import assert from "node:assert/strict";
import { Server, type ServerOptions } from "../server/server.ts";
import type { Connection, Protocol } from "../handlers/connection.ts";
import type { ConnectionLimits } from "../handlers/context.ts";
import { echoProtocol } from "../handlers/protocols/echo.ts";
import type { Proxy, ProxyOptions } from "../handlers/protocols/proxy.ts";
import { close as closeFd, shutdown } from "../syscalls/libc.ts";
import { SHUT_WR } from "../syscalls/constants.ts";
import { connectTcp, listenTcp, localAddress, resetOnClose } from "../syscalls/socket.ts";
import {
  assertFdsBackTo,
  dial,
  echoClients,
  openFdCount,
  pattern,
  readExactly,
  readToEnd,
  sleep,
  waitFor,
  writeAll,
} from "./support/net.ts";
import { rudePeer } from "./support/rude_peer.ts";

const HOST = "127.0.0.1";
const LIMITS: ConnectionLimits = {
  highWaterMark: 1 << 20,
  lowWaterMark: 256 << 10,
  maxOutputBytes: 16 << 20,
};

interface Proxied {
  proxy: Server;
  upstream: Server | null;
  factory: Proxy;
}

/**
 * An upstream server (echo unless `upstream.protocol` says otherwise) and a
 * proxy server in front of it, both in this process; or, with `upstreamPort`,
 * a proxy to that port and no upstream server.
 */
async function withProxy(
  opts: {
    edge?: boolean;
    limits?: ConnectionLimits;
    proxy?: Partial<ProxyOptions>;
    upstream?: Partial<ServerOptions>;
    upstreamPort?: number;
  },
  fn: (p: Proxied) => Promise<void>,
): Promise<void> {
  const limits = opts.limits ?? LIMITS;
  const upstream = opts.upstreamPort === undefined
    ? await Server.start({ app: "echo", host: HOST, port: 0, limits, ...opts.upstream })
    : null;
  const proxy = await Server.start({
    app: "proxy",
    protocolOptions: {
      upstream: { host: HOST, port: opts.upstreamPort ?? upstream!.port },
      ...opts.proxy,
    },
    host: HOST,
    port: 0,
    edge: opts.edge,
    limits,
  });
  const factory = proxy.instance as Proxy;
  try {
    await fn({ proxy, upstream, factory });
  } finally {
    factory.closeAll(); // while the reactor is open: closing unregisters fds
    await proxy.stop();
    await upstream?.stop();
  }
}

/** Waits until the proxy holds no pair and neither server has a connection left. */
async function allClosed({ proxy, upstream, factory }: Proxied): Promise<void> {
  const done = () =>
    proxy.connectionCount === 0 && factory.counters.active === 0 &&
    (upstream === null || upstream.connectionCount === 0);
  assert.ok(
    await waitFor(done),
    `left open: proxy ${proxy.connectionCount}, pairs ${factory.counters.active}, ` +
      `upstream ${upstream?.connectionCount}`,
  );
}

/** A port on 127.0.0.1 that nobody listens on (bound once, then freed). */
function deadPort(): number {
  const fd = listenTcp({ host: HOST, port: 0 });
  const port = localAddress(fd).port;
  closeFd(fd);
  return port;
}

for (const trigger of ["level", "edge"] as const) {
  const edge = trigger === "edge";

  Deno.test(`proxy (${trigger}): round trip`, async () => {
    await withProxy({ edge }, async (p) => {
      const conn = await dial(p.proxy.port);
      const msg = new TextEncoder().encode("hello through the proxy\n");
      await writeAll(conn, msg);
      assert.deepEqual(await readExactly(conn, msg.length), msg);
      conn.close();
      await allClosed(p);
      const c = p.factory.counters;
      assert.equal(c.connects, 1);
      assert.equal(c.connected, 1);
      assert.equal(c.connectFailures, 0);
      // client -> proxy -> upstream -> proxy -> client: the proxy reads each byte twice.
      assert.equal(p.proxy.context.counters.bytesIn, 2 * msg.length);
      assert.equal(p.proxy.context.counters.bytesOut, 2 * msg.length);
      assert.equal(p.proxy.reactor.counters.handlerErrors, 0);
    });
  });

  Deno.test(`proxy (${trigger}): 50 concurrent clients, byte for byte`, async () => {
    await withProxy({ edge }, async (p) => {
      await echoClients(p.proxy.port, 50, (i) => 64 * 1024 + i * 4099);
      await allClosed(p);
      assert.equal(p.factory.counters.connected, 50);
      assert.equal(p.proxy.reactor.counters.handlerErrors, 0);
    });
  });
}

Deno.test("proxy: 256 MiB to an echo upstream and a slow reader, byte for byte, memory bounded", async () => {
  await withProxy({}, async (p) => {
    const total = 256 << 20;
    const started = performance.now();
    const conn = await dial(p.proxy.port);
    // pattern() repeats every 65536 bytes: one 1 MiB chunk serves every offset.
    const chunk = pattern(7, 1 << 20);
    const writer = (async () => {
      for (let off = 0; off < total; off += chunk.length) await writeAll(conn, chunk);
    })();
    await sleep(300); // read nothing yet: every buffer on the way must fill and push back
    // A slow reader, about 64 MiB/s, below what the path through the proxy
    // can carry: the proxy is held back by it for the whole transfer.
    let got = 0;
    const buf = new Uint8Array(64 << 10);
    while (got < total) {
      const n = await conn.read(buf);
      assert.ok(n !== null, `closed after ${got} bytes`);
      for (let i = 0; i < n; i++) {
        if (buf[i] !== chunk[(got + i) & 0xffff]) assert.fail(`byte ${got + i} differs`);
      }
      if ((got >> 20) !== ((got + n) >> 20)) await sleep(15);
      got += n;
    }
    await writer;
    const seconds = (performance.now() - started) / 1000;
    console.log(`256 MiB through the proxy in ${seconds.toFixed(1)} s`);
    assert.equal(got, total);
    const c = p.proxy.context.counters;
    assert.ok(c.readPauses > 0, "backpressure never paused reading");
    const bound = LIMITS.highWaterMark + p.proxy.context.readBuffer.length;
    assert.ok(
      c.peakOutputBytes <= bound,
      `an output buffer reached ${c.peakOutputBytes} bytes, above high water + one read (${bound})`,
    );
    assert.ok(seconds < 60, `took ${seconds} s`);
    conn.close();
    await allClosed(p);
  });
});

Deno.test("proxy: half-close from the client: every echoed byte, then EOF", async () => {
  await withProxy({}, async (p) => {
    for (const [size, readDelay] of [[100_000, 0], [6 << 20, 300]] as const) {
      const conn = await dial(p.proxy.port);
      const data = pattern(size & 0xff, size);
      await writeAll(conn, data);
      await conn.closeWrite();
      // With a delay the client reads nothing for a while: every buffer on
      // the way fills, and the proxy pauses both directions.
      await sleep(readDelay);
      const back = await readToEnd(conn);
      assert.equal(back.length, data.length, `${size} bytes: got ${back.length} before EOF`);
      assert.deepEqual(back, data);
      conn.close();
    }
    await allClosed(p);
    assert.ok(p.factory.counters.halfCloses >= 4, `halfCloses ${p.factory.counters.halfCloses}`);
    assert.equal(p.factory.counters.upstreamErrors, 0);
  });
});

for (const trigger of ["level", "edge"] as const) {
  Deno.test(`proxy (${trigger}): the response to a half-closed request arrives whole while the proxy holds it back`, async () => {
    // Request, FIN, response, FIN (`nc -N` style), and a client that reads
    // nothing for a while. When the response fits in the buffers on the way,
    // the upstream's FIN reaches the proxy while it has stopped reading the
    // upstream (the client is not reading), with the response's tail still
    // unread in the socket. epoll then reports EPOLLHUP; closing on it would
    // lose that tail.
    let response: Uint8Array = new Uint8Array(0);
    const respondOnEnd = (): Protocol => ({
      data() {},
      end(conn: Connection) {
        conn.write(response);
        conn.closeAfterFlush();
      },
    });
    const limits = { highWaterMark: 64 << 10, lowWaterMark: 16 << 10, maxOutputBytes: 16 << 20 };
    await withProxy(
      { edge: trigger === "edge", limits, upstream: { protocol: respondOnEnd } },
      async (p) => {
        // Whether it fits depends on the kernel's buffer sizes and autotuning:
        // grow the response until it happens (at about 4 MiB here), checking
        // every byte of every size.
        for (let size = 1 << 20; size <= 8 << 20 && p.proxy.context.counters.hangupParks === 0;) {
          response = pattern(size >> 16, size);
          const conn = await dial(p.proxy.port);
          await writeAll(conn, new Uint8Array([1]));
          await conn.closeWrite();
          await sleep(100);
          const back = await readToEnd(conn);
          assert.equal(back.length, size, `${size} bytes: got ${back.length} before EOF`);
          assert.deepEqual(back, response);
          conn.close();
          await allClosed(p);
          size += 256 << 10;
        }
        assert.ok(
          p.proxy.context.counters.hangupParks > 0,
          "no upstream FIN arrived while the proxy held it back",
        );
        assert.equal(p.factory.counters.upstreamErrors, 0);
      },
    );
  });
}

Deno.test("proxy: half-close from the upstream: the client still uploads after EOF", async () => {
  // Upstream: answers "go" with a greeting and a FIN, then keeps counting
  // what arrives until the client's FIN, and closes.
  let received = 0;
  let upstreamSawEnd = false;
  const greeting = pattern(3, 300_000);
  const halfCloser = (): Protocol => {
    let greeted = false;
    return {
      data(conn: Connection, _d: Uint8Array, start: number, end: number) {
        received += end - start;
        if (!greeted) {
          greeted = true;
          conn.write(greeting);
          // Connection has no "shutdown after flush"; the greeting fits in
          // the socket buffers on loopback, so shut at once.
          assert.equal(conn.output.length, 0);
          shutdown(conn.fd, SHUT_WR);
        }
      },
      end(conn: Connection) {
        upstreamSawEnd = true;
        conn.close("eof");
      },
    };
  };
  await withProxy({ upstream: { protocol: halfCloser } }, async (p) => {
    const conn = await dial(p.proxy.port);
    await writeAll(conn, new TextEncoder().encode("go"));
    assert.deepEqual(await readToEnd(conn), greeting, "greeting, then EOF");
    const more = pattern(4, 2 << 20);
    await writeAll(conn, more); // the client -> upstream direction still flows
    assert.ok(await waitFor(() => received === 2 + more.length), `upstream got ${received}`);
    await conn.closeWrite();
    assert.ok(await waitFor(() => upstreamSawEnd), "the client's FIN never reached the upstream");
    conn.close();
    await allClosed(p);
    assert.equal(p.factory.counters.halfCloses, 2);
  });
});

Deno.test("proxy: upstream down: the client gets a clean close, quickly", async () => {
  await withProxy({ upstreamPort: deadPort() }, async (p) => {
    for (const early of [false, true]) {
      const t0 = performance.now();
      const conn = await dial(p.proxy.port);
      if (early) await writeAll(conn, pattern(1, 200_000)); // bytes that will never be forwarded
      // A reset would make read() throw ECONNRESET; a clean close reads null.
      const n = await conn.read(new Uint8Array(1024));
      const ms = performance.now() - t0;
      assert.equal(n, null, "expected EOF");
      assert.ok(ms < 1000, `close took ${ms.toFixed(0)} ms`);
      conn.close();
    }
    await allClosed(p);
    assert.equal(p.factory.counters.connectFailures, 2);
    assert.equal(p.factory.counters.connected, 0);
    assert.equal(p.proxy.reactor.counters.handlerErrors, 0);
  });
});

Deno.test("proxy: an upstream that never answers: connect timeout, clean close", async () => {
  // A listener that never accepts, with its accept queue full: the kernel
  // drops further SYNs, so a connect to it hangs.
  const lfd = listenTcp({ host: HOST, port: 0, backlog: 0 });
  const port = localAddress(lfd).port;
  const fillers: number[] = [];
  try {
    for (let i = 0; i < 2; i++) fillers.push(connectTcp(HOST, port).fd);
    await sleep(50);
    await withProxy({ upstreamPort: port, proxy: { connectTimeoutMs: 300 } }, async (p) => {
      const t0 = performance.now();
      const conn = await dial(p.proxy.port);
      const n = await conn.read(new Uint8Array(16));
      const ms = performance.now() - t0;
      assert.equal(n, null, "expected EOF");
      assert.ok(ms >= 250 && ms < 2000, `closed after ${ms.toFixed(0)} ms, timeout 300 ms`);
      conn.close();
      await allClosed(p);
      assert.equal(p.factory.counters.connectTimeouts, 1);
    });
  } finally {
    for (const fd of fillers) closeFd(fd);
    closeFd(lfd);
  }
});

Deno.test("proxy: an upstream reset mid-stream closes that client; the others are served", async () => {
  // Echo, except that a connection whose first byte is "R" is reset (SO_LINGER 0)
  // once 100 KB have arrived.
  const resetting = (): Protocol => {
    let first = -1;
    let seen = 0;
    return {
      data(conn: Connection, d: Uint8Array, start: number, end: number) {
        if (first < 0) first = d[start];
        seen += end - start;
        if (first === 0x52 && seen > 100_000) {
          resetOnClose(conn.fd);
          conn.close("local");
          return;
        }
        echoProtocol.data(conn, d, start, end);
      },
    };
  };
  await withProxy({ upstream: { protocol: resetting } }, async (p) => {
    const good = Array.from({ length: 20 }, async (_, i) => {
      const conn = await dial(p.proxy.port);
      const data = pattern(50 + i, 1 << 20);
      data[0] = 0x47; // "G"
      const [, back] = await Promise.all([writeAll(conn, data), readExactly(conn, data.length)]);
      conn.close();
      assert.deepEqual(back, data, `good client ${i}`);
    });
    const rude = Array.from({ length: 10 }, async (_, i) => {
      const conn = await dial(p.proxy.port);
      const data = pattern(80 + i, 4 << 20);
      data[0] = 0x52; // "R"
      const writing = writeAll(conn, data).catch(() => {}); // fails once the proxy closes
      const back = await readToEnd(conn); // EOF or a reset: either ends it
      assert.ok(back.length < data.length, `rude client ${i} got all ${back.length} bytes`);
      await writing;
      conn.close();
    });
    await Promise.all([...good, ...rude]);
    await allClosed(p);
    assert.equal(p.factory.counters.upstreamErrors, 10);
    assert.equal(p.proxy.reactor.counters.handlerErrors, 0);
    // Still serving.
    const late = await dial(p.proxy.port);
    const ping = new TextEncoder().encode("Gping");
    await writeAll(late, ping);
    assert.deepEqual(await readExactly(late, ping.length), ping);
    late.close();
    await allClosed(p);
  });
});

Deno.test("proxy: a client reset closes its upstream; the others are served", async () => {
  await withProxy({}, async (p) => {
    const good = Array.from({ length: 10 }, async (_, i) => {
      const conn = await dial(p.proxy.port);
      const data = pattern(120 + i, 1 << 20);
      const [, back] = await Promise.all([writeAll(conn, data), readExactly(conn, data.length)]);
      conn.close();
      assert.deepEqual(back, data, `good client ${i}`);
    });
    // Push bytes that come back and are never read, then close with
    // SO_LINGER 0: the kernel sends RST with data in flight.
    const rude = Array.from(
      { length: 10 },
      (_, i) => rudePeer(p.proxy.port, 140 + i, 1 << 20, 50, "client"),
    );
    await Promise.all([...good, ...rude]);
    await allClosed(p);
    assert.ok(p.factory.counters.clientErrors > 0, "no client reset was seen");
    assert.equal(p.proxy.reactor.counters.handlerErrors, 0);
  });
});

Deno.test("proxy: bytes sent while the upstream connect is in flight are held, bounded, then forwarded", async () => {
  // An upstream that listens but does not accept yet, its accept queue full
  // (backlog 0): the kernel drops the proxy's SYN, and the connect completes
  // only when the SYN is retransmitted (after ~1 s) once the queue has room.
  const upstream = await Server.create({
    app: "echo",
    host: HOST,
    port: 0,
    backlog: 0,
    limits: LIMITS,
  });
  const fillers = [connectTcp(HOST, upstream.port).fd, connectTcp(HOST, upstream.port).fd];
  const proxy = await Server.start({
    app: "proxy",
    protocolOptions: { upstream: { host: HOST, port: upstream.port } },
    host: HOST,
    port: 0,
    limits: LIMITS,
  });
  const factory = proxy.instance as Proxy;
  try {
    await sleep(50);
    const conn = await dial(proxy.port);
    const data = pattern(9, 4 << 20);
    const writing = writeAll(conn, data);
    const reading = readExactly(conn, data.length);
    await sleep(300);
    assert.equal(factory.counters.connected, 0, "the connect was not held up: test set-up failed");
    const c = proxy.context.counters;
    assert.ok(c.readPauses > 0, "the client was not paused while its bytes waited");
    upstream.run(); // accepts the fillers; the retransmitted SYN gets in
    await writing;
    assert.deepEqual(await reading, data);
    conn.close();
    assert.ok(await waitFor(() => proxy.connectionCount === 0 && factory.counters.active === 0));
    assert.equal(factory.counters.connected, 1);
    const bound = LIMITS.highWaterMark + proxy.context.readBuffer.length;
    assert.ok(c.peakOutputBytes <= bound, `peak output ${c.peakOutputBytes} > ${bound}`);
  } finally {
    factory.closeAll(); // while the reactor is open: closing unregisters fds
    await proxy.stop();
    for (const fd of fillers) closeFd(fd);
    await upstream.stop();
  }
});

Deno.test("proxy: the idle timeout sees traffic both ways; an idle tunnel is closed", async () => {
  // Upstream: on any byte, sends one byte every 50 ms, 16 times, then closes.
  const ticker = (): Protocol => ({
    data(conn: Connection) {
      let left = 16;
      const tick = () => {
        conn.write(new Uint8Array([left]));
        if (--left > 0) conn.reactor.resetTimer(timer, 50);
        else conn.closeAfterFlush();
      };
      const timer = conn.reactor.setTimer(50, tick);
    },
  });
  const upstream = await Server.start({ app: "echo", host: HOST, port: 0, protocol: ticker });
  const proxy = await Server.start({
    app: "proxy",
    protocolOptions: { upstream: { host: HOST, port: upstream.port } },
    host: HOST,
    port: 0,
    limits: LIMITS,
    timeouts: { idleMs: 300, requestMs: 0, writeMs: 0 },
  });
  const factory = proxy.instance as Proxy;
  try {
    // 800 ms of download only: the client sends nothing after its first byte.
    const busy = await dial(proxy.port);
    await writeAll(busy, new Uint8Array([1]));
    const got = await readToEnd(busy);
    assert.equal(got.length, 16, `the tunnel was cut after ${got.length} of 16 ticks`);
    busy.close();
    // Nothing either way: closed after the idle timeout.
    const t0 = performance.now();
    const idle = await dial(proxy.port);
    assert.equal(await idle.read(new Uint8Array(16)), null);
    const ms = performance.now() - t0;
    assert.ok(ms >= 250 && ms < 1500, `idle tunnel closed after ${ms.toFixed(0)} ms`);
    idle.close();
    await allClosed({ proxy, upstream, factory });
  } finally {
    factory.closeAll(); // while the reactor is open: closing unregisters fds
    await proxy.stop();
    await upstream.stop();
  }
});

Deno.test("proxy: graceful shutdown closes quiet tunnels with a FIN", async () => {
  await withProxy({}, async (p) => {
    const conns = await Promise.all(Array.from({ length: 5 }, () => dial(p.proxy.port)));
    const msg = new TextEncoder().encode("ping");
    for (const conn of conns) {
      await writeAll(conn, msg);
      assert.deepEqual(await readExactly(conn, msg.length), msg);
    }
    const closing = p.proxy.shutdown(5000);
    for (const conn of conns) {
      assert.equal(await conn.read(new Uint8Array(16)), null, "expected EOF");
      conn.close();
    }
    assert.equal(await closing, 0, "connections were cut at the timeout");
    assert.equal(p.factory.counters.active, 0);
    assert.ok(await waitFor(() => p.upstream!.connectionCount === 0));
  });
});

Deno.test("proxy: 500 connect/echo/close cycles and 100 failed connects leak no fd", async () => {
  await withProxy({}, async (p) => {
    const before = openFdCount();
    const msg = new TextEncoder().encode("ping");
    for (let i = 0; i < 500; i++) {
      const conn = await dial(p.proxy.port);
      await writeAll(conn, msg);
      await readExactly(conn, msg.length);
      conn.close();
    }
    await allClosed(p);
    await assertFdsBackTo(before);
  });
  await withProxy({ upstreamPort: deadPort() }, async (p) => {
    const before = openFdCount();
    for (let i = 0; i < 100; i++) {
      const conn = await dial(p.proxy.port);
      assert.equal(await conn.read(new Uint8Array(16)), null);
      conn.close();
    }
    await allClosed(p);
    assert.equal(p.factory.counters.connectFailures, 100);
    await assertFdsBackTo(before);
  });
});
