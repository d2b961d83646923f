/**
 * WebSocket edge cases found in review, each a test that failed before its
 * fix: close() right after a Blob send dropped what was queued (and sent the
 * close frame first); `e.currentTarget` was null in `on*` handlers; an
 * upgrade request with a body upgraded (and read the body as frames); a
 * handler that called upgradeWebSocket but returned another response left
 * the socket CONNECTING forever; a client that half-closed while its async
 * handler ran left the socket open; a bad maxWebSocketMessage was taken.
 */
import assert from "node:assert/strict";
import { type HttpServer, serve } from "../mod.ts";
import { dial, sleep, until } from "./support/net.ts";
import { closeOf, dialUpgrade, frame, upgradeRequest, WsReader } from "./support/ws.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function withServer(
  handler: (req: Request) => Response | Promise<Response>,
  fn: (server: HttpServer) => Promise<void>,
): Promise<void> {
  const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
  try {
    await fn(server);
  } finally {
    await server.shutdown();
  }
}

Deno.test("websocket edges: close() after Blob sends sends everything queued first, in order, then the close frame", async () => {
  await withServer((req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => {
      socket.send(new Blob(["B1"]));
      socket.send("S2");
      socket.send(new Uint8Array([0x33]));
      socket.send(new Blob(["B4"]));
      socket.close(1000, "end");
    };
    return response;
  }, async (server) => {
    const { conn, r, head } = await dialUpgrade(server.addr.port);
    try {
      assert.match(head, /^HTTP\/1\.1 101 /);
      const got: string[] = [];
      for (;;) {
        const f = await r.frame();
        assert.ok(f, "frames until the close");
        if (f.opcode === 8) {
          got.push(`close ${closeOf(f).code} ${closeOf(f).reason}`);
          break;
        }
        got.push(`${f.opcode} ${dec.decode(f.payload)}`);
      }
      assert.deepEqual(got, ["2 B1", "1 S2", "2 3", "2 B4", "close 1000 end"]);
    } finally {
      conn.close();
    }
  });
});

Deno.test("websocket edges: in an on* handler e.currentTarget is the socket and eventPhase AT_TARGET (as on Deno)", async () => {
  const seen: string[] = [];
  await withServer((req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => {
      seen.push(`phase ${e.eventPhase} same ${e.currentTarget === socket}`);
      (e.currentTarget as WebSocket).send(`echo ${e.data}`);
    };
    return response;
  }, async (server) => {
    const { conn, r, head } = await dialUpgrade(server.addr.port);
    try {
      assert.match(head, /^HTTP\/1\.1 101 /);
      await conn.write(frame(1, "hi"));
      const f = await r.frame();
      assert.equal(dec.decode(f!.payload), "echo hi");
      assert.deepEqual(seen, ["phase 2 same true"]);
    } finally {
      conn.close();
    }
  });
});

Deno.test("websocket edges: an upgrade request with a body gets 400 (as Deno), not an upgrade", async () => {
  await withServer((req) => Deno.upgradeWebSocket(req).response, async (server) => {
    const { conn, head } = await dialUpgrade(
      server.addr.port,
      upgradeRequest("/", ["Content-Length: 4"]) + "abcd",
    );
    conn.close();
    assert.match(head, /^HTTP\/1\.1 400 /);
  });
});

Deno.test("websocket edges: upgradeWebSocket called but its response not returned: the socket gets error and close 1006", async () => {
  const seen: string[] = [];
  await withServer((req) => {
    const { socket } = Deno.upgradeWebSocket(req);
    socket.onerror = () => seen.push("error");
    socket.onclose = (e) => seen.push(`close ${e.code}`);
    return new Response("no", { status: 403 });
  }, async (server) => {
    const { conn, head } = await dialUpgrade(server.addr.port);
    try {
      assert.match(head, /^HTTP\/1\.1 403 /);
      await until(() => seen.length === 2, "the socket's error and close");
      assert.deepEqual(seen, ["error", "close 1006"]);
    } finally {
      conn.close();
    }
  });
});

Deno.test("websocket edges: a client that half-closes while its async handler runs: the socket hears it and the connection closes", async () => {
  const seen: string[] = [];
  await withServer(async (req) => {
    await sleep(50);
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    socket.onclose = (e) => seen.push(`close ${e.code}`);
    return response;
  }, async (server) => {
    const conn = await dial(server.addr.port);
    try {
      await conn.write(enc.encode(upgradeRequest("/")));
      await conn.closeWrite();
      assert.match(await new WsReader(conn).head(), /^HTTP\/1\.1 101 /);
      await until(() => seen.length > 0, "the socket to close", 3000);
      await until(() => server.server.connectionCount === 0, "the connection to close", 3000);
    } finally {
      conn.close();
    }
  });
});

Deno.test("websocket edges: a maxWebSocketMessage outside 125..2^31-1 is a TypeError at start", () => {
  for (const bad of [NaN, -1, 10, 1.5, 2 ** 31]) {
    assert.throws(
      () => serve({ port: 0, onListen() {}, maxWebSocketMessage: bad }, () => new Response()),
      TypeError,
      String(bad),
    );
  }
});
