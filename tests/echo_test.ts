import assert from "node:assert/strict";
import { withServer } from "./support/server.ts";
import {
  assertFdsBackTo,
  dial,
  echoClients,
  openFdCount,
  pattern,
  readExactly,
  readPatternSlowly,
  waitFor,
  writeAll,
  writePattern,
} from "./support/net.ts";
import { rudePeer } from "./support/rude_peer.ts";

for (const trigger of ["level", "edge"] as const) {
  const edge = trigger === "edge";

  Deno.test(`echo (${trigger}): round trip`, async () => {
    await withServer({ edge }, async (server) => {
      const conn = await dial(server.port);
      const msg = new TextEncoder().encode("hello, reactor\n");
      await writeAll(conn, msg);
      assert.deepEqual(await readExactly(conn, msg.length), msg);
      conn.close();
      assert.ok(await waitFor(() => server.connectionCount === 0), "server did not see the close");
      assert.equal(server.context.counters.accepted, 1);
      assert.equal(server.context.counters.closed, 1);
      assert.equal(server.context.counters.bytesIn, msg.length);
      assert.equal(server.context.counters.bytesOut, msg.length);
    });
  });

  Deno.test(`echo (${trigger}): 200 concurrent clients, byte for byte`, async () => {
    await withServer({ edge }, async (server) => {
      await echoClients(server.port, 200, (i) => 16384 + i * 37);
      assert.ok(await waitFor(() => server.connectionCount === 0));
      assert.equal(server.context.counters.accepted, 200);
    });
  });
}

Deno.test("echo: 64 MiB to a slow reader arrives in order, EPOLLOUT armed and disarmed, memory bounded", async () => {
  const limits = { highWaterMark: 1 << 20, lowWaterMark: 256 << 10, maxOutputBytes: 16 << 20 };
  await withServer({ limits }, async (server) => {
    const total = 64 << 20;
    const conn = await dial(server.port);
    const c = server.context.counters;
    const writer = writePattern(conn, 7, total);
    // Read nothing until the server's sends hit EAGAIN and it paused reading:
    // waiting for that, not a fixed time a loaded machine may not honour.
    assert.ok(
      await waitFor(() => c.writableArms >= 1 && c.readPauses >= 1, 15000),
      `no backpressure while nobody read: ${c.writableArms} arms, ${c.readPauses} pauses`,
    );
    const got = await readPatternSlowly(conn, 7, total);
    await writer;
    assert.equal(got, total);
    assert.ok(c.writableArms >= 1, "EPOLLOUT was never armed");
    assert.ok(c.readPauses >= 1, "backpressure never paused reading");
    assert.ok(await waitFor(() => c.writableDisarms === c.writableArms), "EPOLLOUT left armed");
    assert.ok(
      c.peakOutputBytes <= limits.highWaterMark + server.context.readBuffer.length,
      `output buffer reached ${c.peakOutputBytes} bytes, above high water + one read`,
    );
    conn.close();
  });
});

Deno.test("echo: 2,000 connect/write/close cycles leak no fd", async () => {
  await withServer({}, async (server) => {
    const before = openFdCount();
    const msg = new TextEncoder().encode("ping");
    for (let i = 0; i < 2000; i++) {
      const conn = await dial(server.port);
      await writeAll(conn, msg);
      await readExactly(conn, msg.length);
      conn.close();
    }
    assert.ok(await waitFor(() => server.connectionCount === 0), "connections left open");
    assert.equal(server.context.counters.accepted, 2000);
    assert.equal(server.context.counters.closed, 2000);
    await assertFdsBackTo(before);
  });
});

Deno.test("echo: a peer that resets mid-transfer does not disturb the others", async () => {
  await withServer({}, async (server) => {
    const good = Array.from({ length: 20 }, async (_, i) => {
      const conn = await dial(server.port);
      const data = pattern(100 + i, 2 << 20);
      const [, back] = await Promise.all([writeAll(conn, data), readExactly(conn, data.length)]);
      conn.close();
      assert.deepEqual(back, data);
    });
    // Rude peers: push bytes the server echoes back, never read them, then
    // close with SO_LINGER 0 so the kernel sends RST while data is in flight.
    const rude = Array.from({ length: 20 }, (_, i) => rudePeer(server.port, 200 + i, 1 << 20, 50));
    await Promise.all([...good, ...rude]);
    assert.ok(await waitFor(() => server.connectionCount === 0), "connections left open");
    assert.equal(server.reactor.counters.handlerErrors, 0);
  });
});
