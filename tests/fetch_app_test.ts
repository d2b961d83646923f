/**
 * The fetch path under abuse: clients that leave mid-stream (request and
 * response) leave no fd and no stream behind; a slow handler does not hold
 * back other connections; pipelined async answers keep their order.
 */

import assert from "node:assert/strict";
import { Router, serve, serveNative } from "../mod.ts";
import { probeIoUring } from "../syscalls/io_uring.ts";
import { assertFdsBackTo, openFdCount, sleep, until } from "./support/net.ts";

const enc = new TextEncoder();

Deno.test("fetch: 200 clients leaving mid-response-stream and mid-upload leave no fd and no stream", async () => {
  let open = 0;
  let cancelled = 0;
  const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    if (req.method === "POST") {
      // Read the upload until the client vanishes: the body must error, not end.
      try {
        for await (const _ of req.body!) { /* discard */ }
        return new Response("whole?!", { status: 500 });
      } catch {
        return new Response("cut");
      }
    }
    open++;
    return new Response(
      new ReadableStream<Uint8Array>({
        pull(c) {
          return sleep(5).then(() => c.enqueue(new Uint8Array(1024)));
        },
        cancel() {
          open--;
          cancelled++;
        },
      }),
    );
  });
  const port = server.addr.port;
  const before = openFdCount();
  try {
    for (let round = 0; round < 4; round++) {
      await Promise.all(Array.from({ length: 50 }, async (_, i) => {
        const c = await Deno.connect({ port });
        if (i % 2 === 0) {
          await c.write(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
          await c.read(new Uint8Array(2048)); // the head and a first chunk
        } else {
          await c.write(enc.encode("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"));
          await c.write(new Uint8Array(5000));
        }
        c.close();
      }));
    }
    await until(() => open === 0 && server.server.connectionCount === 0, "every stream cancelled");
    assert.equal(cancelled, 100);
    // The process-wide fd count is a loose check (up to 10 over): other
    // files' clients (Deno's fetch pool) open and close fds around this test.
    const after = await assertFdsBackTo(before, 10);
    const c = server.server.context.counters;
    console.log(
      `fds before ${before}, after 200 aborted exchanges ${after}; accepted ${c.accepted}, closed ${c.closed}`,
    );
    // Exact: every accepted connection was closed (its fd released).
    assert.equal(c.accepted, 200);
    assert.equal(c.closed, c.accepted, "connections left open");
  } finally {
    await server.shutdown();
  }
});

Deno.test("fetch: pipelined async handlers finishing out of order are answered in order", async () => {
  const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const n = Number(new URL(req.url).pathname.slice(1));
    await sleep((10 - n) * 5); // the last asked finishes first
    return new Response(`answer ${n};`);
  });
  try {
    const c = await Deno.connect({ port: server.addr.port });
    let batch = "";
    for (let n = 0; n < 10; n++) batch += `GET /${n} HTTP/1.1\r\nHost: x\r\n\r\n`;
    await c.write(enc.encode(batch));
    let text = "";
    const buf = new Uint8Array(65536);
    while ((text.match(/answer \d;/g) ?? []).length < 10) {
      const k = await c.read(buf);
      if (k === null) break;
      text += new TextDecoder().decode(buf.subarray(0, k));
    }
    c.close();
    assert.deepEqual(
      text.match(/answer \d;/g),
      Array.from({ length: 10 }, (_, n) => `answer ${n};`),
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("fetch: a slow handler on one connection does not hold back another", async () => {
  const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    if (new URL(req.url).pathname === "/slow") await sleep(1000);
    return new Response("ok");
  });
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    const slow = fetch(`${base}/slow`).then((r) => r.text());
    await sleep(20);
    const t0 = performance.now();
    assert.equal(await (await fetch(`${base}/fast`)).text(), "ok");
    const ms = performance.now() - t0;
    console.log(`fast request beside a 1 s one: ${ms.toFixed(1)} ms`);
    assert.ok(ms < 500, `the fast request waited ${ms} ms`);
    assert.equal(await slow, "ok");
  } finally {
    await server.shutdown();
  }
});

/** Reads from `c` until `done(text)` holds (or EOF, or 5 s). */
async function readUntil(c: Deno.Conn, done: (text: string) => boolean): Promise<string> {
  let text = "";
  const buf = new Uint8Array(65536);
  const end = performance.now() + 5000;
  while (!done(text) && performance.now() < end) {
    const k = await c.read(buf);
    if (k === null) break;
    text += new TextDecoder().decode(buf.subarray(0, k));
  }
  return text;
}

Deno.test("fetch: a 1 MiB body the handler never reads is skipped; the next request on the connection is answered", async () => {
  const server = serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (req) => new Response(`ignored ${new URL(req.url).pathname};`),
  );
  try {
    const c = await Deno.connect({ port: server.addr.port });
    const writing = (async () => {
      await c.write(
        enc.encode(`POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: ${1 << 20}\r\n\r\n`),
      );
      await c.write(new Uint8Array(1 << 20));
      await c.write(enc.encode("GET /b HTTP/1.1\r\nHost: x\r\n\r\n"));
    })();
    const text = await readUntil(c, (t) => t.includes("ignored /b;"));
    await writing;
    c.close();
    assert.ok(text.includes("ignored /a;") && text.includes("ignored /b;"), text.slice(0, 300));
  } finally {
    await server.shutdown();
  }
});

Deno.test("fetch: Expect: 100-continue gets 100 when the handler reads the body, and a closing answer when it does not", async () => {
  const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    if (new URL(req.url).pathname === "/read") {
      return new Response(`got ${(await req.text()).length}`);
    }
    return new Response("no thanks", { status: 413 });
  });
  try {
    const head = (path: string) =>
      `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`;
    const a = await Deno.connect({ port: server.addr.port });
    await a.write(enc.encode(head("/read")));
    const cont = await readUntil(a, (t) => t.includes("\r\n\r\n"));
    assert.match(cont, /^HTTP\/1\.1 100 Continue\r\n\r\n/);
    await a.write(enc.encode("hello"));
    const final = await readUntil(a, (t) => t.includes("got 5"));
    assert.match(final, /HTTP\/1\.1 200 OK/);
    a.close();

    const b = await Deno.connect({ port: server.addr.port });
    await b.write(enc.encode(head("/skip")));
    const answer = await readUntil(b, (t) => t.includes("no thanks"));
    assert.match(answer, /^HTTP\/1\.1 413 /, "no 100 Continue before the final answer");
    assert.match(answer, /connection: close/i);
    b.close();
  } finally {
    await server.shutdown();
  }
});

Deno.test("fetch: 100 pipelined requests to a slow handler (past the 32 in flight) are all answered with no further input", async () => {
  const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    await sleep(2);
    return new Response(`r${new URL(req.url).pathname.slice(1)};`);
  });
  try {
    const c = await Deno.connect({ port: server.addr.port });
    let batch = "";
    for (let n = 0; n < 100; n++) batch += `GET /${n} HTTP/1.1\r\nHost: x\r\n\r\n`;
    await c.write(enc.encode(batch)); // then nothing more: the kept requests must not wait for input
    const text = await readUntil(c, (t) => (t.match(/r\d+;/g) ?? []).length >= 100);
    c.close();
    assert.deepEqual(text.match(/r\d+;/g), Array.from({ length: 100 }, (_, n) => `r${n};`));
  } finally {
    await server.shutdown();
  }
});

Deno.test("fetch: an incomplete request gets 408 at the request timeout, not the idle one", async () => {
  const server = serve({
    port: 0,
    hostname: "127.0.0.1",
    onListen() {},
    timeouts: { idleMs: 30_000, requestMs: 300, writeMs: 5_000 },
  }, () => new Response("ok"));
  try {
    const c = await Deno.connect({ port: server.addr.port });
    const t0 = performance.now();
    await c.write(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n")); // never finished
    const text = await readUntil(c, (t) => t.includes("\r\n\r\n"));
    const ms = performance.now() - t0;
    c.close();
    console.log(`408 after ${ms.toFixed(0)} ms (request timeout 300 ms, idle 30 s)`);
    assert.match(text, /^HTTP\/1\.1 408 /);
    assert.ok(ms < 5000, `took ${ms} ms`);
  } finally {
    await server.shutdown();
  }
});

Deno.test("fetch: request.url follows each request's Host on one connection (the URL cache never goes stale)", async () => {
  const server = serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (req) => new Response(`${req.url};`),
  );
  try {
    const c = await Deno.connect({ port: server.addr.port });
    const hosts = ["a.example", "a.example", "b.example:81", "a.example"];
    const paths = ["/x", "/x", "/x", "/y"];
    let batch = "";
    for (let i = 0; i < hosts.length; i++) {
      batch += `GET ${paths[i]} HTTP/1.1\r\nHost: ${hosts[i]}\r\n\r\n`;
    }
    await c.write(enc.encode(batch));
    const text = await readUntil(c, (t) => (t.match(/http:[^;]*;/g) ?? []).length >= 4);
    c.close();
    assert.deepEqual(text.match(/http:[^;]*;/g), [
      "http://a.example/x;",
      "http://a.example/x;",
      "http://b.example:81/x;",
      "http://a.example/y;",
    ]);
  } finally {
    await server.shutdown();
  }
});

/** A handler answering with the method and the length of the body it read. */
const lengthOfBody = async (req: Request) =>
  new Response(`${req.method} ${(await req.text()).length}`);

/** 50 clients at once POST bodies of 1,000 to 50,000 bytes to `port`; each answer names its length. */
async function postFifty(port: number): Promise<void> {
  const big = "x".repeat(50_000);
  const answers = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
    const r = await fetch(`http://127.0.0.1:${port}/`, {
      method: "POST",
      body: big.slice(0, 1000 * (i + 1)),
    });
    return await r.text();
  }));
  answers.forEach((text, i) => assert.equal(text, `POST ${1000 * (i + 1)}`));
}

const IO_URING = probeIoUring();

Deno.test({
  name:
    "fetch: serve() and serveNative() run on io_uring (backend option): bodies both ways, 50 clients",
  ignore: !IO_URING.ok,
  async fn() {
    const fetchServer = serve(
      { port: 0, hostname: "127.0.0.1", onListen() {}, backend: "io_uring" },
      lengthOfBody,
    );
    const router = new Router().post("/n", (req, res) => {
      res.text(`native ${req.path}`);
    });
    const nativeServer = serveNative(
      { port: 0, hostname: "127.0.0.1", onListen() {}, backend: "io_uring" },
      router,
    );
    try {
      await postFifty(fetchServer.addr.port);
      const n = await fetch(`http://127.0.0.1:${nativeServer.addr.port}/n`, { method: "POST" });
      assert.equal(await n.text(), "native /n");
    } finally {
      await fetchServer.shutdown();
      await nativeServer.shutdown();
    }
  },
});

Deno.test("fetch: serve() and serveNative() take batchWaitUs on epoll: bodies both ways, 50 clients, all exact", async () => {
  // The option reaches the reactor (which checks it) before anything listens.
  const opts = { port: 0, hostname: "127.0.0.1", onListen() {}, batchWaitUs: 20_000 };
  assert.throws(() => serve(opts, () => new Response("")), RangeError);
  assert.throws(() => serveNative(opts, new Router()), RangeError);
  const fetchServer = serve(
    { port: 0, hostname: "127.0.0.1", onListen() {}, batchWaitUs: 100 },
    lengthOfBody,
  );
  const router = new Router().get("/n/:i", (req, res) => {
    res.text(`native ${req.param("i")}`);
  });
  const nativeServer = serveNative(
    { port: 0, hostname: "127.0.0.1", onListen() {}, batchWaitUs: 100 },
    router,
  );
  try {
    await postFifty(fetchServer.addr.port);
    const native = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
      const r = await fetch(`http://127.0.0.1:${nativeServer.addr.port}/n/${i}`);
      return await r.text();
    }));
    native.forEach((text, i) => assert.equal(text, `native ${i}`));
  } finally {
    await fetchServer.shutdown();
    await nativeServer.shutdown();
  }
});
