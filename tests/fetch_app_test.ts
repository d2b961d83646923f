/**
 * The fetch path under abuse: clients that leave mid-stream (request and
 * response) leave no fd and no stream behind; a slow handler does not hold
 * back other connections; pipelined async answers keep their order.
 */

import assert from "node:assert/strict";
import { serve } from "../mod.ts";
import { openFdCount, sleep, until } from "./support/net.ts";

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
    await sleep(50);
    const after = openFdCount();
    console.log(`fds before ${before}, after 200 aborted exchanges ${after}`);
    assert.ok(after <= before + 2, `fds grew from ${before} to ${after}`);
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
