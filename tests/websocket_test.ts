/**
 * WebSocket on the reactor over raw sockets: the handshake (accept key, 400
 * and 426), every RFC 6455 rule the server enforces (each closes with its
 * code, then the TCP connection), ping/pong, the close handshake both ways,
 * frames pipelined behind the upgrade request, subprotocols, the idle
 * timeout's ping, Deno.upgradeWebSocket standing in while the server runs.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DEFAULT_LIMITS, type HttpServer, serve, type ServeOptions } from "../mod.ts";
import {
  closeOf,
  closePayload,
  dialUpgrade,
  frame,
  type ServerFrame,
  upgradeRequest,
  WsReader,
} from "./support/ws.ts";
import { concat, dial, sleep, until } from "./support/net.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** What the server's sockets saw. */
type Seen = string[];

interface Ctx {
  port: number;
  server: HttpServer;
  seen: Seen;
  /** A raw connection with the upgrade done (101 checked), its reader and the 101's head. */
  open(path?: string, extra?: string[]): Promise<{ conn: Deno.TcpConn; r: WsReader; head: string }>;
}

/** `/async` handlers begun, in any test's server (a test waits for its own to begin). */
let asyncBegun = 0;

async function withWs(
  fn: (ctx: Ctx) => Promise<void> | void,
  opts: Partial<ServeOptions> = {},
): Promise<void> {
  const seen: Seen = [];
  const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {}, ...opts }, async (req) => {
    const url = new URL(req.url);
    if (req.headers.get("upgrade") === null) return new Response(`plain ${url.pathname}`);
    if (url.pathname === "/refuse") return new Response("no", { status: 403 });
    if (url.pathname === "/async") {
      asyncBegun++;
      await sleep(20);
    }
    const { socket, response } = Deno.upgradeWebSocket(req, {
      protocol: url.searchParams.get("protocol") ?? undefined,
      idleTimeout: Number(url.searchParams.get("idle") ?? 30),
    });
    socket.onopen = () => seen.push(`open ${socket.protocol}`);
    socket.onmessage = (e) => {
      const d = typeof e.data === "string" ? e.data : `bin ${new Uint8Array(e.data).length}`;
      seen.push(`message ${d}`);
      if (e.data === "bye") socket.close(4001, "done");
      else if (typeof e.data === "string" && e.data.startsWith("flood")) {
        // No regard for bufferedAmount: N MiB at once (40 by default).
        const n = Number(e.data.slice(6)) || 40;
        for (let k = 0; k < n; k++) socket.send(new Uint8Array(1 << 20));
      } else socket.send(e.data);
    };
    socket.onerror = (e) => seen.push(`error ${(e as ErrorEvent).message}`);
    socket.onclose = (e) => seen.push(`close ${e.code} ${e.reason} ${e.wasClean}`);
    return response;
  });
  const conns: Deno.TcpConn[] = [];
  try {
    await fn({
      server,
      port: server.addr.port,
      seen,
      async open(path = "/", extra = []) {
        const opened = await dialUpgrade(server.addr.port, upgradeRequest(path, extra));
        conns.push(opened.conn);
        assert.match(opened.head, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
        return opened;
      },
    });
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed already */ }
    }
    await server.shutdown();
  }
}

/** How long a wait for the server's side may take. */
const WAIT_MS = 5000;

/** Expects a close frame with `code`, then EOF. */
async function expectClose(r: WsReader, code: number): Promise<ServerFrame> {
  const f = await r.frame();
  assert.ok(f, "a close frame before EOF");
  assert.equal(f.opcode, 8, `a close frame, got opcode ${f.opcode}`);
  assert.equal(closeOf(f).code, code);
  assert.ok(await r.eof(), "EOF after the close frame");
  return f;
}

async function rawExchange(port: number, request: string): Promise<string> {
  const { conn, head } = await dialUpgrade(port, request);
  conn.close();
  return head;
}

Deno.test("websocket: the handshake: 101 with the accept key, unmasked final frames back", async () => {
  await withWs(async ({ port, seen }) => {
    const { conn, r, head: raw } = await dialUpgrade(port, upgradeRequest("/chat"));
    const head = raw.toLowerCase();
    assert.match(head, /^http\/1\.1 101 switching protocols/);
    assert.match(head, /\r\nupgrade: websocket/);
    assert.match(head, /\r\nconnection: upgrade/);
    // RFC 6455 4.2.2's example key and answer.
    assert.match(head, /\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk\+xoo=/);
    assert.doesNotMatch(head, /content-length|transfer-encoding/);
    await conn.write(frame(1, "héllo"));
    const f = (await r.frame())!;
    assert.deepEqual([f.fin, f.rsv, f.opcode, f.masked], [true, 0, 1, false]);
    assert.equal(dec.decode(f.payload), "héllo");
    await conn.write(frame(2, new Uint8Array([1, 2, 3])));
    const b = (await r.frame())!;
    assert.deepEqual([b.opcode, Array.from(b.payload)], [2, [1, 2, 3]]);
    await until(() => seen.length >= 3, "events", WAIT_MS);
    assert.deepEqual(seen.slice(0, 3), ["open ", "message héllo", "message bin 3"]);
    conn.close();
  });
});

Deno.test("websocket: bad handshakes are 400 (426 for the version), and HTTP goes on", async () => {
  await withWs(async ({ port }) => {
    const cases: [string, RegExp][] = [
      [upgradeRequest("/", [], ["sec-websocket-key"]), /^HTTP\/1\.1 400 /],
      [
        upgradeRequest("/", ["Sec-WebSocket-Key: c2hvcnQ="], ["sec-websocket-key"]),
        /^HTTP\/1\.1 400 /,
      ],
      [upgradeRequest("/", ["Connection: keep-alive"], ["connection"]), /^HTTP\/1\.1 400 /],
      [upgradeRequest("/", ["Upgrade: h2c"], ["upgrade"]), /^HTTP\/1\.1 400 /],
      [upgradeRequest("/", [], []).replace("GET", "POST"), /^HTTP\/1\.1 400 /],
      [upgradeRequest("/", [], []).replace("HTTP/1.1", "HTTP/1.0"), /^HTTP\/1\.0 400 /],
      [
        upgradeRequest("/", ["Sec-WebSocket-Version: 8"], ["sec-websocket-version"]),
        /^HTTP\/1\.1 426 /,
      ],
      [upgradeRequest("/", [], ["sec-websocket-version"]), /^HTTP\/1\.1 426 /],
      // A protocol the client did not offer.
      [upgradeRequest("/?protocol=chat", ["Sec-WebSocket-Protocol: other"]), /^HTTP\/1\.1 400 /],
    ];
    for (const [request, status] of cases) {
      const head = await rawExchange(port, request);
      assert.match(head, status, request);
      assert.doesNotMatch(head, /sec-websocket-accept/i);
      if (/ 426 /.test(head)) assert.match(head, /\r\nsec-websocket-version: 13/i);
    }
    // Tokens in lists and in any case are fine.
    const ok = await rawExchange(
      port,
      upgradeRequest("/", ["Connection: keep-alive, UPGRADE", "Upgrade: foo, WebSocket"], [
        "connection",
        "upgrade",
      ]),
    );
    assert.match(ok, /^HTTP\/1\.1 101 /);
    // After a refused handshake the connection still speaks HTTP (pipelined).
    const { conn, head } = await dialUpgrade(
      port,
      upgradeRequest("/", ["Sec-WebSocket-Version: 7"], ["sec-websocket-version"]) +
        "GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert.match(head, /^HTTP\/1\.1 426 /);
    conn.close();
  });
});

Deno.test("websocket: a handler that answers an upgrade request without upgrading keeps HTTP", async () => {
  await withWs(async ({ port }) => {
    const conn = await dial(port);
    await conn.write(enc.encode(
      upgradeRequest("/refuse") + "GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    const all = new Uint8Array(4096);
    let text = "";
    for (;;) {
      const n = await conn.read(all);
      if (n === null) break;
      text += dec.decode(all.subarray(0, n));
    }
    conn.close();
    assert.match(text, /^HTTP\/1\.1 403 /);
    assert.match(text, /HTTP\/1\.1 200 [^]*plain \/after$/);
  });
});

Deno.test("websocket: frames pipelined behind the upgrade request belong to the socket", async () => {
  await withWs(async ({ port, seen }) => {
    for (const path of ["/", "/async"]) {
      seen.length = 0;
      const conn = await dial(port);
      await conn.write(concat(
        enc.encode(upgradeRequest(path)),
        frame(1, "first"),
        frame(1, "second"),
      ));
      const r = new WsReader(conn);
      assert.match(await r.head(), /^HTTP\/1\.1 101 /);
      assert.equal(dec.decode((await r.frame())!.payload), "first");
      assert.equal(dec.decode((await r.frame())!.payload), "second");
      conn.close();
      await until(() => seen.some((s) => s.startsWith("close")), "close", WAIT_MS);
      assert.deepEqual(seen.slice(0, 3), ["open ", "message first", "message second"]);
    }
  });
});

Deno.test("websocket: each protocol error closes with its code, then the connection", async () => {
  await withWs(async ({ open, seen }) => {
    const cases: [string, Uint8Array, number][] = [
      ["unmasked", frame(1, "x", { mask: false }), 1002],
      ["rsv1", frame(1, "x", { rsv: 4 }), 1002],
      ["rsv3", frame(2, "x", { rsv: 1 }), 1002],
      ["opcode 3", frame(3, "x"), 1002],
      ["opcode 11", frame(11), 1002],
      ["ping over 125", frame(9, new Uint8Array(126)), 1002],
      ["fragmented ping", frame(9, "p", { fin: false }), 1002],
      ["lone continuation", frame(0, "x"), 1002],
      ["text inside text", concat(frame(1, "a", { fin: false }), frame(1, "b")), 1002],
      ["close of 1 byte", frame(8, new Uint8Array([1])), 1002],
      ["close code 1005", frame(8, closePayload(1005)), 1002],
      ["close code 999", frame(8, closePayload(999)), 1002],
      ["bad UTF-8", frame(1, new Uint8Array([0xc0, 0x80])), 1007],
      [
        "bad UTF-8 across fragments",
        concat(frame(1, new Uint8Array([0xe2, 0x82]), { fin: false }), frame(0, "x")),
        1007,
      ],
      ["bad close reason", frame(8, concat(closePayload(1000), new Uint8Array([0xff]))), 1007],
    ];
    for (const [what, bytes, code] of cases) {
      seen.length = 0;
      const { conn, r } = await open();
      await conn.write(bytes);
      await expectClose(r, code).catch((e) => {
        throw new Error(`${what}: ${e.message}`);
      });
      await until(() => seen.some((s) => s.startsWith("close")), `${what}: close event`, WAIT_MS);
      const close = seen.find((s) => s.startsWith("close"))!;
      assert.match(close, new RegExp(`^close ${code} .* false$`), what);
      assert.ok(seen.some((s) => s.startsWith("error")), `${what}: an error event`);
      assert.ok(!seen.some((s) => s.startsWith("message")), `${what}: no message`);
      conn.close();
    }
  });
});

Deno.test("websocket: a message over --max-ws-message closes with 1009", async () => {
  await withWs(async ({ open }) => {
    const { conn, r } = await open();
    await conn.write(frame(2, new Uint8Array(1000)));
    assert.equal(new Uint8Array((await r.frame())!.payload).length, 1000);
    // Told by the header: the payload is never waited for.
    await conn.write(frame(2, new Uint8Array(1001)).subarray(0, 8));
    await expectClose(r, 1009);
    conn.close();
  }, { maxWebSocketMessage: 1000 });
});

Deno.test("websocket: ping is answered with the same payload, between fragments too", async () => {
  await withWs(async ({ open }) => {
    const { conn, r } = await open();
    await conn.write(frame(9, "ping-data"));
    const pong = (await r.frame())!;
    assert.deepEqual([pong.opcode, dec.decode(pong.payload)], [10, "ping-data"]);
    await conn.write(frame(10, "unsolicited")); // a pong nobody asked for: ignored
    await conn.write(concat(
      frame(1, "frag", { fin: false }),
      frame(9, new Uint8Array(125).fill(7)),
      frame(0, "ment"),
    ));
    const p2 = (await r.frame())!;
    assert.deepEqual([p2.opcode, p2.payload.length, p2.payload[124]], [10, 125, 7]);
    const m = (await r.frame())!;
    assert.deepEqual([m.opcode, dec.decode(m.payload)], [1, "fragment"]);
    conn.close();
  });
});

Deno.test("websocket: the client closes: same code back, the server closes TCP, no data after", async () => {
  await withWs(async ({ open, seen }) => {
    const { conn, r } = await open();
    await conn.write(concat(frame(8, closePayload(4321, "client done")), frame(1, "late")));
    const f = await expectClose(r, 4321);
    assert.equal(closeOf(f).reason, "client done");
    await until(() => seen.some((s) => s.startsWith("close")), "close event", WAIT_MS);
    assert.deepEqual(seen, ["open ", "close 4321 client done true"]);
    conn.close();
    // A close without a code is answered without one.
    const b = await open();
    await b.conn.write(frame(8));
    const g = (await b.r.frame())!;
    assert.deepEqual([g.opcode, g.payload.length], [8, 0]);
    assert.ok(await b.r.eof());
    b.conn.close();
  });
});

Deno.test("websocket: the server closes: its close frame, then it waits for the client's", async () => {
  await withWs(async ({ open, seen }) => {
    const { conn, r } = await open();
    await conn.write(frame(1, "bye"));
    const f = (await r.frame())!;
    assert.deepEqual([f.opcode, closeOf(f).code, closeOf(f).reason], [8, 4001, "done"]);
    // Data the client sends before its close frame is not delivered (closing).
    await conn.write(frame(1, "ignored"));
    await sleep(50);
    assert.ok(!seen.some((s) => s.startsWith("close")), "still closing");
    await conn.write(frame(8, closePayload(4001, "done")));
    assert.ok(await r.eof(), "the server closes TCP after the handshake");
    await until(() => seen.some((s) => s.startsWith("close")), "close event", WAIT_MS);
    assert.deepEqual(seen, ["open ", "message bye", "close 4001 done true"]);
    conn.close();
  });
});

Deno.test("websocket: the client vanishes: error, then close 1006 not clean", async () => {
  await withWs(async ({ open, seen }) => {
    const { conn } = await open();
    conn.close();
    await until(() => seen.some((s) => s.startsWith("close")), "close event", WAIT_MS);
    assert.equal(seen[seen.length - 1], "close 1006  false");
    assert.ok(seen.some((s) => s.startsWith("error")));
  });
});

Deno.test("websocket: subprotocol: the chosen one is in the 101 and socket.protocol", async () => {
  await withWs(async ({ open, seen }) => {
    const { conn, head } = await open("/?protocol=chat", [
      "Sec-WebSocket-Protocol: superchat, chat",
    ]);
    assert.match(head, /\r\nsec-websocket-protocol: chat(\r\n|$)/i);
    await until(() => seen.length > 0, "open", WAIT_MS);
    assert.equal(seen[0], "open chat");
    conn.close();
  });
});

Deno.test("websocket: idleTimeout: a ping after half of it, close 1001 after the rest", async () => {
  await withWs(async ({ open, seen }) => {
    const started = Date.now();
    const { conn, r } = await open("/?idle=1");
    const ping = (await r.frame())!;
    const pingAt = Date.now() - started;
    assert.equal(ping.opcode, 9);
    const f = await expectClose(r, 1001);
    const closeAt = Date.now() - started;
    console.log(`ping after ${pingAt} ms, close after ${closeAt} ms (idleTimeout 1 s)`);
    assert.ok(pingAt >= 400, `ping after ${pingAt} ms`);
    assert.ok(closeAt >= 900, `close after ${closeAt} ms`);
    assert.equal(closeOf(f).reason, "No response from ping frame.");
    await until(() => seen.some((s) => s.startsWith("close")), "close event", WAIT_MS);
    assert.match(seen[seen.length - 1], /^close 1001 No response from ping frame\. false$/);
    conn.close();
    // A client that answers pings stays.
    const b = await open("/?idle=1");
    for (let k = 0; k < 3; k++) {
      const p = (await b.r.frame())!;
      assert.equal(p.opcode, 9);
      await b.conn.write(frame(10, p.payload));
    }
    b.conn.close();
  });
});

Deno.test("websocket: Deno.upgradeWebSocket is ours while a server runs, Deno's again after", async () => {
  const original = Deno.upgradeWebSocket;
  await withWs(() => {
    assert.notEqual(Deno.upgradeWebSocket, original);
    // A request that is not ours goes to Deno's own: its socket is Deno's.
    const req = new Request("http://x/", {
      headers: {
        upgrade: "websocket",
        connection: "upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      },
    });
    const { socket } = Deno.upgradeWebSocket(req);
    assert.equal(Object.getPrototypeOf(socket), WebSocket.prototype);
  });
  assert.equal(Deno.upgradeWebSocket, original);
});

/** A metric's value from the server's /metrics text. */
function metric(server: HttpServer, name: string): number {
  const m = server.server.metrics().match(
    new RegExp(`^reactor_${name}(?:\\{[^}]*\\})? (\\S+)$`, "m"),
  );
  assert.ok(m, `metric ${name}`);
  return Number(m[1]);
}

Deno.test("websocket: /metrics counts open sockets, messages and bytes both ways", async () => {
  await withWs(async ({ open, server }) => {
    const a = await open();
    const b = await open();
    assert.equal(metric(server, "websockets_open"), 2);
    await a.conn.write(concat(frame(1, "héllo"), frame(2, new Uint8Array(1000))));
    await a.r.frame();
    await a.r.frame();
    assert.equal(metric(server, "websocket_messages_received_total"), 2);
    assert.equal(metric(server, "websocket_messages_sent_total"), 2);
    assert.equal(metric(server, "websocket_received_bytes_total"), 1006);
    assert.equal(metric(server, "websocket_sent_bytes_total"), 1006);
    await b.conn.write(frame(1, "x", { rsv: 2 }));
    await expectClose(b.r, 1002);
    assert.equal(metric(server, "websockets_open"), 1);
    a.conn.close();
    b.conn.close();
    await until(() => metric(server, "websockets_open") === 0, "both closed", WAIT_MS);
    assert.equal(metric(server, "websockets_opened_total"), 2);
    assert.equal(metric(server, "websocket_protocol_errors_total"), 1);
  });
});

Deno.test("websocket: shutdown mid-conversation: close 1001 to every socket, waits for the handshake", async () => {
  await withWs(async ({ open, server, seen }) => {
    const polite = await open();
    const silent = await open();
    const client = new WebSocket(`ws://127.0.0.1:${server.addr.port}/`);
    const clientClosed = new Promise<CloseEvent>((r) => client.onclose = r);
    await new Promise((r) => client.onopen = r);
    await polite.conn.write(frame(1, "before"));
    assert.equal(dec.decode((await polite.r.frame())!.payload), "before");
    const started = Date.now();
    const done = server.shutdown();
    for (const s of [polite, silent]) {
      const f = (await s.r.frame())!;
      assert.deepEqual([f.opcode, closeOf(f).code], [8, 1001]);
    }
    const e = await clientClosed; // Deno's client answers the close frame
    assert.deepEqual([e.code, e.wasClean], [1001, true]);
    await polite.conn.write(frame(8, closePayload(1001)));
    assert.ok(await polite.r.eof(), "closed after the handshake");
    // The silent one holds the shutdown until its timeout (500 ms here).
    await done;
    const took = Date.now() - started;
    console.log(`shutdown took ${took} ms with one socket not answering`);
    assert.ok(took >= 400, `shutdown waited for the silent socket (${took} ms)`);
    assert.ok(await silent.r.eof());
    await until(
      () => seen.filter((s) => s.startsWith("close")).length === 3,
      "3 close events",
      WAIT_MS,
    );
    assert.equal(seen.filter((s) => s === "close 1001 server shutting down true").length, 1);
    assert.equal(seen.filter((s) => /^close 1001 .* true$/.test(s)).length, 2);
  }, { shutdownTimeoutMs: 500 });
});

Deno.test("websocket: a socket upgraded while the server drains gets close 1001 at once", async () => {
  await withWs(async ({ port, server }) => {
    const conn = await dial(port);
    const begun = asyncBegun;
    await conn.write(enc.encode(upgradeRequest("/async"))); // upgraded after 20 ms
    // Drain once the handler runs (a fixed 5 ms wait was not always enough
    // for the server to have read the request on a loaded machine: it then
    // closed an idle connection, and the client read a reset).
    await until(() => asyncBegun > begun, "the /async handler to begin", WAIT_MS);
    const done = server.shutdown();
    const r = new WsReader(conn);
    assert.match(await r.head(), /^HTTP\/1\.1 101 /);
    const f = (await r.frame())!;
    assert.deepEqual([f.opcode, closeOf(f).code], [8, 1001]);
    await conn.write(frame(8, closePayload(1001)));
    assert.ok(await r.eof());
    conn.close();
    await done;
  });
});

Deno.test("websocket: a slow reader of a pushing server: bufferedAmount says what waits, nothing lost", async () => {
  const N = 400;
  const SIZE = 64 << 10;
  let peak = 0;
  let pushed = 0;
  const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    const push = () => {
      // The app's own backpressure: send while less than 256 KiB waits.
      while (pushed < N && socket.bufferedAmount < 256 << 10) {
        const m = new Uint8Array(SIZE).fill(pushed & 0xff);
        m[0] = pushed >> 8;
        socket.send(m);
        pushed++;
        peak = Math.max(peak, socket.bufferedAmount);
      }
      if (pushed < N) setTimeout(push, 1);
    };
    socket.onopen = push;
    return response;
  });
  try {
    const { conn, r } = await dialUpgrade(server.addr.port);
    await new Promise((res) => setTimeout(res, 500)); // not reading
    const stalledAt = pushed;
    console.log(`pushed ${stalledAt} of ${N} while the client slept; bufferedAmount peak ${peak}`);
    assert.ok(stalledAt < N, "the server stopped pushing");
    assert.ok(peak > 0 && peak < (256 << 10) + SIZE + 16, `peak ${peak}`);
    for (let k = 0; k < N; k++) {
      const f = (await r.frame())!;
      assert.equal(f.payload.length, SIZE);
      assert.equal((f.payload[0] << 8) | f.payload[1], k === 0 ? 0 : (k >> 8 << 8) | (k & 0xff));
    }
    conn.close();
  } finally {
    await server.shutdown();
  }
});

Deno.test("websocket: a writer that ignores backpressure to a peer that reads nothing is cut (overflow)", async () => {
  await withWs(async ({ open, seen }) => {
    const { conn } = await open();
    await conn.write(frame(1, "flood")); // and never read
    await until(() => seen.some((s) => s.startsWith("close")), "the socket cut", WAIT_MS);
    assert.equal(seen[seen.length - 1], "close 1006  false");
    conn.close();
  }, { limits: { ...DEFAULT_LIMITS, maxOutputBytes: 2 << 20 } });
});

Deno.test("websocket: a peer that takes nothing for the write timeout is cut", async () => {
  await withWs(async ({ open, seen }) => {
    const { conn } = await open();
    const started = Date.now();
    await conn.write(frame(1, "flood 4")); // within the overflow limit, never read
    await until(() => seen.some((s) => s.startsWith("close")), "the socket cut", WAIT_MS);
    const took = Date.now() - started;
    console.log(`cut after ${took} ms (write timeout 300 ms)`);
    assert.ok(took >= 250, `cut by the write timeout, after ${took} ms`);
    assert.equal(seen[seen.length - 1], "close 1006  false");
    conn.close();
  }, { timeouts: { idleMs: 60_000, requestMs: 10_000, writeMs: 300 } });
});
