/**
 * The request memo (handlers/protocols/http/request_memo.ts): a connection's
 * last simple request, kept as bytes, so that the same bytes again skip the
 * parse (and, on the fetch path, the head's copy). What it must never do:
 * take a request cut short for the whole one (the read buffer behind a short
 * read still holds an older read's bytes), hand a handler another request's
 * head, or reuse a Request object. Each case runs on every path that has a
 * memo: the built-in routes, the native API and the fetch path.
 */

import assert from "node:assert/strict";
import { Router, serve, serveNative } from "../mod.ts";
import { withServer } from "./support/server.ts";
import { dial, sleep, writeAll } from "./support/net.ts";
import { bytes, ResponseReader } from "./support/http.ts";

/** serve() on 127.0.0.1 and a free port, quietly. */
const LOCAL = { port: 0, hostname: "127.0.0.1", onListen() {} };

/** A connection to `port` and a reader of the responses on it. */
async function client(port: number): Promise<{ conn: Deno.TcpConn; reader: ResponseReader }> {
  const conn = await dial(port);
  return { conn, reader: new ResponseReader(conn) };
}

const REQUEST = "GET / HTTP/1.1\r\nHost: memo.test\r\nX-Id: 7\r\n\r\n";

/** Servers with a memo, each answering GET / with a 200 (and the fetch path with what it saw). */
const SERVERS: [string, (run: (port: number) => Promise<void>) => Promise<void>][] = [
  ["built-in routes", (run) => withServer({ app: "http" }, (server) => run(server.port))],
  ["native API", async (run) => {
    const router = new Router().get("/", (req, res) => res.text(`native ${req.header("x-id")}`));
    const server = serveNative(LOCAL, router);
    try {
      await run(server.addr.port);
    } finally {
      await server.shutdown();
    }
  }],
  ["fetch path", async (run) => {
    await using server = serve(LOCAL, (req) => new Response(`fetch ${req.headers.get("x-id")}`));
    await run(server.addr.port);
  }],
];

for (const [name, withPort] of SERVERS) {
  Deno.test(`memo (${name}): the remembered bytes cut short are not a request until the rest comes`, async () => {
    await withPort(async (port) => {
      const { conn, reader } = await client(port);
      try {
        // Remembered: the same bytes twice, answered.
        for (let i = 0; i < 2; i++) {
          await writeAll(conn, bytes(REQUEST));
          assert.equal((await reader.next()).status, 200);
        }
        // All but the final CRLF: the read buffer behind these bytes still
        // holds the last read's, which complete them. Not a request yet.
        await writeAll(conn, bytes(REQUEST.slice(0, -2)));
        const answer = reader.next();
        const early = await Promise.race([
          answer.then(() => "answered"),
          sleep(200).then(() => "waiting"),
        ]);
        assert.equal(early, "waiting", "a request cut short was answered");
        await writeAll(conn, bytes("\r\n"));
        const r = await answer;
        assert.equal(r.status, 200);
        // And the same bytes again, whole, after that: answered as before.
        await writeAll(conn, bytes(REQUEST + REQUEST));
        assert.equal((await reader.next()).status, 200);
        assert.equal((await reader.next()).status, 200);
      } finally {
        conn.close();
      }
    });
  });
}

Deno.test("memo (fetch path): every repeat is a fresh Request with its own head; other requests between are parsed", async () => {
  const seen = new Set<Request>();
  await using server = serve(LOCAL, async (req) => {
    seen.add(req);
    const id = req.headers.get("x-id");
    // A handler that changes its Request's headers changes no later one's.
    req.headers.set("x-id", "changed");
    const body = req.body === null ? "-" : await req.text();
    const url = new URL(req.url);
    return new Response(`${req.method} ${url.pathname}${url.search} ${id} ${body};`);
  });
  const a = "GET /a?q=1 HTTP/1.1\r\nHost: memo.test\r\nX-Id: 1\r\n\r\n";
  const b = "GET /b HTTP/1.1\r\nHost: memo.test\r\nX-Id: 2\r\n\r\n";
  const post = "POST /p HTTP/1.1\r\nHost: memo.test\r\nX-Id: 3\r\nContent-Length: 4\r\n\r\nbody";
  const head = "HEAD /a?q=1 HTTP/1.1\r\nHost: memo.test\r\nX-Id: 4\r\n\r\n";
  const sequence = [b, a, a, a, b, a, post, post, a, head, head, a];
  const expected = [
    "GET /b 2 -;",
    "GET /a?q=1 1 -;",
    "GET /a?q=1 1 -;",
    "GET /a?q=1 1 -;",
    "GET /b 2 -;",
    "GET /a?q=1 1 -;",
    "POST /p 3 body;",
    "POST /p 3 body;",
    "GET /a?q=1 1 -;",
    null,
    null,
    "GET /a?q=1 1 -;",
  ];
  const { conn, reader } = await client(server.addr.port);
  // Pipelined in one write, then one at a time (a read per request).
  await writeAll(conn, bytes(sequence.join("")));
  for (const want of expected) {
    const r = await reader.next(want === null);
    assert.equal(r.status, 200);
    if (want !== null) assert.equal(r.body, want);
  }
  for (let i = 0; i < sequence.length; i++) {
    await writeAll(conn, bytes(sequence[i]));
    const r = await reader.next(expected[i] === null);
    if (expected[i] !== null) assert.equal(r.body, expected[i]);
  }
  conn.close();
  assert.equal(seen.size, 2 * sequence.length, "a Request object was handed out twice");
  // a a a, head head, and in the second round the same: taken without a parse.
  assert.equal(repeats(server), 6);
});

Deno.test("memo (fetch path): a file's request again, once the file is gone, reaches the handler with its own head", async () => {
  const root = await Deno.makeTempDir();
  await Deno.writeTextFile(`${root}/f.txt`, "file");
  await using server = serve(
    { ...LOCAL, files: { root } },
    (req) => new Response(`handler ${new URL(req.url).pathname} ${req.headers.get("x-id")}`),
  );
  try {
    const { conn, reader } = await client(server.addr.port);
    const other = "GET /other HTTP/1.1\r\nHost: memo.test\r\nX-Id: 1\r\n\r\n";
    const file = "GET /f.txt HTTP/1.1\r\nHost: memo.test\r\nX-Id: 2\r\n\r\n";
    await writeAll(conn, bytes(other));
    assert.equal((await reader.next()).body, "handler /other 1");
    for (let i = 0; i < 2; i++) {
      await writeAll(conn, bytes(file));
      assert.equal((await reader.next()).body, "file");
    }
    await Deno.remove(`${root}/f.txt`);
    await writeAll(conn, bytes(file));
    assert.equal((await reader.next()).body, "handler /f.txt 2");
    conn.close();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("memo (fetch path): the remembered request again after other connections' heads filled the arenas", async () => {
  await using server = serve(
    LOCAL,
    (req) => new Response(`${new URL(req.url).pathname} ${req.headers.get("x-id")};`),
  );
  const { conn: a, reader: aReader } = await client(server.addr.port);
  const again = "GET /again HTTP/1.1\r\nHost: memo.test\r\nX-Id: a\r\n\r\n";
  for (let i = 0; i < 2; i++) {
    await writeAll(a, bytes(again));
    assert.equal((await aReader.next()).body, "/again a;");
  }
  // 200 heads of ~4 KiB from another connection: the 64 KiB head arena is
  // renewed a dozen times (renewed, never written over).
  const { conn: b, reader: bReader } = await client(server.addr.port);
  const pad = "p".repeat(4000);
  for (let i = 0; i < 200; i++) {
    await writeAll(
      b,
      bytes(`GET /b${i} HTTP/1.1\r\nHost: memo.test\r\nX-Id: b${i}\r\nX-Pad: ${pad}\r\n\r\n`),
    );
    assert.equal((await bReader.next()).body, `/b${i} b${i};`);
    if (i % 50 === 49) {
      await writeAll(a, bytes(again));
      assert.equal((await aReader.next()).body, "/again a;");
    }
  }
  a.close();
  b.close();
});

/** The fetch app's count of requests taken from the memo, from the server's metrics. */
function repeats(server: { server: { metrics(): string } }): number {
  const m = server.server.metrics().match(/^reactor_requests_repeated_total (\d+)$/m);
  assert.ok(m, "no requests_repeated_total metric");
  return Number(m[1]);
}

Deno.test("memo (fetch path): traffic that never repeats stops being remembered; a repeat later is taken up again", async () => {
  await using server = serve(
    LOCAL,
    (req) => new Response(`${new URL(req.url).search} ${req.headers.get("x-n")};`),
  );
  const { conn, reader } = await client(server.addr.port);
  const get = (n: number) => `GET /?n=${n} HTTP/1.1\r\nHost: memo.test\r\nX-N: ${n}\r\n\r\n`;
  // 300 different requests, pipelined 30 to a write: all answered, in
  // order, each with its own head (past 16 misses one execute() parses
  // many), none repeated.
  for (let w = 0; w < 10; w++) {
    let batch = "";
    for (let k = 0; k < 30; k++) batch += get(w * 30 + k);
    await writeAll(conn, bytes(batch));
    for (let k = 0; k < 30; k++) {
      const n = w * 30 + k;
      assert.equal((await reader.next()).body, `?n=${n} ${n};`);
    }
  }
  assert.equal(repeats(server), 0);
  // Then one request over and over, one at a time: within one probe
  // period (64 parses) it is remembered again, and every later one is a repeat.
  for (let k = 0; k < 200; k++) {
    await writeAll(conn, bytes(get(7)));
    assert.equal((await reader.next()).body, "?n=7 7;");
  }
  const taken = repeats(server);
  console.log(`${taken} of 200 repeats taken from the memo after 300 different requests`);
  assert.ok(taken >= 200 - 65, `only ${taken} of 200 repeats taken from the memo`);
  conn.close();
});
