import assert from "node:assert/strict";
import { withServer } from "./support/server.ts";
import { dial, sleep, startCli, until, waitFor, within, writeAll } from "./support/net.ts";
import { bytes, ResponseReader } from "./support/http.ts";
import type { Server } from "../server/server.ts";

const GET = (path: string, extra = "") => `GET ${path} HTTP/1.1\r\nHost: t\r\n${extra}\r\n`;

async function exchange(server: Server, raw: string) {
  const conn = await dial(server.port);
  await writeAll(conn, bytes(raw));
  return { conn, reader: new ResponseReader(conn) };
}

const http = (fn: (server: Server) => Promise<void>) =>
  withServer({ app: "http", protocolOptions: { maxBody: 1024, maxHeaderBytes: 2048 } }, fn);

Deno.test("http: GET / answers Hello, World! with Date, Server, Content-Type", async () => {
  await http(async (server) => {
    const before = Date.now();
    const { conn, reader } = await exchange(server, GET("/"));
    const r = await reader.next();
    const after = Date.now();
    assert.equal(r.status, 200);
    assert.equal(r.body, "Hello, World!");
    assert.equal(r.headers.get("content-type"), "text/plain");
    assert.equal(r.headers.get("content-length"), "13");
    assert.equal(r.headers.get("server"), "reactor");
    // Bracketed by the clock before the request and after the answer, so a
    // slow machine cannot push it out. The header has whole seconds, rebuilt
    // by a timer at each second: it may trail `before` by up to 1 s plus how
    // late that timer runs (3 s in all allowed); it can never be ahead of
    // `after`. A wrong clock or time zone fails.
    const date = Date.parse(r.headers.get("date")!);
    assert.ok(
      date <= after && date > before - 3000,
      `Date header ${r.headers.get("date")}, request sent at ${new Date(before).toUTCString()}`,
    );
    conn.close();
  });
});

Deno.test("http: routes /plaintext, /json, /health, 404, and a query string", async () => {
  await http(async (server) => {
    const { conn, reader } = await exchange(
      server,
      GET("/plaintext") + GET("/json") + GET("/health") + GET("/nope") + GET("/json?x=1"),
    );
    const rs = [];
    for (let i = 0; i < 5; i++) rs.push(await reader.next());
    assert.deepEqual(rs.map((r) => r.status), [200, 200, 200, 404, 200]);
    assert.equal(rs[0].body, "Hello, World!");
    assert.deepEqual(JSON.parse(rs[1].body), { message: "Hello, World!" });
    assert.equal(rs[1].headers.get("content-type"), "application/json");
    assert.equal(rs[4].headers.get("content-type"), "application/json");
    conn.close();
  });
});

Deno.test("http: HEAD has the GET headers and no body", async () => {
  await http(async (server) => {
    const { conn, reader } = await exchange(
      server,
      "HEAD /json HTTP/1.1\r\nHost: t\r\n\r\n" + GET("/health"),
    );
    const head = await reader.next(true);
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), "27");
    const next = await reader.next();
    assert.equal(next.body, "OK", "the HEAD response carried no body bytes");
    conn.close();
  });
});

Deno.test("http: keep-alive by default, many requests on one connection", async () => {
  await http(async (server) => {
    const conn = await dial(server.port);
    const reader = new ResponseReader(conn);
    for (let i = 0; i < 20; i++) {
      await writeAll(conn, bytes(GET(i % 2 ? "/json" : "/")));
      const r = await reader.next();
      assert.equal(r.status, 200);
      assert.equal(r.headers.has("connection"), false);
    }
    assert.equal(server.context.counters.accepted, 1);
    conn.close();
  });
});

Deno.test("http: 100 pipelined requests are answered in order, in few sends", async () => {
  await http(async (server) => {
    const paths = Array.from({ length: 100 }, (_, i) => ["/", "/json", "/health", "/x"][i % 4]);
    const { conn, reader } = await exchange(server, paths.map((p) => GET(p)).join(""));
    for (const p of paths) {
      const r = await reader.next();
      const want = p === "/x" ? 404 : 200;
      assert.equal(r.status, want, `response for ${p}`);
      if (p === "/health") assert.equal(r.body, "OK");
      if (p === "/json") assert.match(r.body, /message/);
    }
    assert.ok(server.context.counters.bytesOut > 0);
    conn.close();
  });
});

Deno.test("http: a request trickling in byte by byte parses the same", async () => {
  await http(async (server) => {
    const conn = await dial(server.port);
    const reader = new ResponseReader(conn);
    const raw = bytes(GET("/json", "X-Slow: yes\r\n") + GET("/health"));
    for (let i = 0; i < raw.length; i++) {
      await writeAll(conn, raw.subarray(i, i + 1));
      if (i % 7 === 0) await sleep(1);
    }
    assert.match((await reader.next()).body, /Hello/);
    assert.equal((await reader.next()).body, "OK");
    conn.close();
  });
});

Deno.test("http: Connection: close is honoured; the server closes after the response", async () => {
  await http(async (server) => {
    const { conn, reader } = await exchange(server, GET("/", "Connection: close\r\n") + GET("/"));
    const r = await reader.next();
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("connection"), "close");
    assert.ok(await reader.closed(), "bytes after the close request were answered");
    conn.close();
  });
});

Deno.test("http: HTTP/1.0 closes unless it asks for keep-alive", async () => {
  await http(async (server) => {
    const a = await exchange(server, "GET / HTTP/1.0\r\n\r\n");
    assert.equal((await a.reader.next()).status, 200);
    assert.ok(await a.reader.closed());
    a.conn.close();
    const b = await exchange(server, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const r = await b.reader.next();
    assert.equal(r.headers.get("connection"), "keep-alive");
    await writeAll(b.conn, bytes("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    assert.equal((await b.reader.next()).body, "OK", "still open for a second request");
    b.conn.close();
  });
});

Deno.test("http: bodies are read and discarded (Content-Length and chunked), 405 for POST", async () => {
  await http(async (server) => {
    const { conn, reader } = await exchange(
      server,
      "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello" +
        "POST /json HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
        GET("/health"),
    );
    const a = await reader.next();
    assert.equal(a.status, 405);
    assert.equal(a.headers.get("allow"), "GET, HEAD");
    assert.equal((await reader.next()).status, 405);
    assert.equal((await reader.next()).body, "OK", "the bodies did not leak into the next request");
    conn.close();
  });
});

const BAD: [string, string, number][] = [
  ["a malformed request line", "GET /\r\n\r\n", 400],
  ["a bad header line", "GET / HTTP/1.1\r\nHost t\r\n\r\n", 400],
  ["a NUL byte", "GET /\0 HTTP/1.1\r\nHost: t\r\n\r\n", 400],
  ["no Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400],
  [
    "Content-Length and Transfer-Encoding",
    "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    400,
  ],
  ["a malformed Content-Length", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n", 400],
  ["a body above --max-body", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", 413],
  [
    "a header section above --max-header-bytes",
    `GET / HTTP/1.1\r\nHost: t\r\nX: ${"a".repeat(3000)}\r\n\r\n`,
    431,
  ],
  [
    "an unknown transfer coding",
    "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    501,
  ],
  ["HTTP/2.0 in a request line", "GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505],
];

for (const [what, raw, status] of BAD) {
  Deno.test(`http: ${what} -> ${status} and close; other clients undisturbed`, async () => {
    await http(async (server) => {
      const good = await dial(server.port);
      const goodReader = new ResponseReader(good);
      const { conn, reader } = await exchange(server, raw + GET("/"));
      const r = await reader.next();
      assert.equal(r.status, status);
      assert.equal(r.headers.get("connection"), "close");
      assert.ok(await reader.closed(), "the connection closed after the error");
      conn.close();
      await writeAll(good, bytes(GET("/health")));
      assert.equal((await goodReader.next()).body, "OK");
      good.close();
    });
  });
}

Deno.test("http: a peer that sends half a request and closes costs nothing", async () => {
  await http(async (server) => {
    const conn = await dial(server.port);
    await writeAll(conn, bytes("GET /plain"));
    conn.close();
    const ok = await exchange(server, GET("/"));
    assert.equal((await ok.reader.next()).status, 200);
    ok.conn.close();
    await sleep(20);
    assert.equal(server.reactor.counters.handlerErrors, 0);
  });
});

Deno.test("http: long runs of identical pipelined requests overflow the response buffer intact", async () => {
  await http(async (server) => {
    const raw = GET("/").repeat(3000) + GET("/json").repeat(700) + GET("/health") +
      GET("/").repeat(5);
    const { conn, reader } = await exchange(server, raw);
    for (let i = 0; i < 3000; i++) {
      assert.equal((await reader.next()).body, "Hello, World!", `#${i}`);
    }
    for (let i = 0; i < 700; i++) assert.match((await reader.next()).body, /^\{"message"/);
    assert.equal((await reader.next()).body, "OK");
    for (let i = 0; i < 5; i++) assert.equal((await reader.next()).body, "Hello, World!");
    conn.close();
  });
});

Deno.test("http: runs of identical answers of every length around the prebuilt run keep their order", async () => {
  await http(async (server) => {
    // 64 identical answers are sent from one prebuilt run; check the lengths
    // around it, runs cut short by other answers, and a 404 (never cached).
    const lengths = [1, 2, 63, 64, 65, 127, 128, 129, 200];
    let raw = "";
    const expected: string[] = [];
    for (const n of lengths) {
      raw += GET("/").repeat(n) + GET("/json") + GET("/nope");
      for (let i = 0; i < n; i++) expected.push("Hello, World!");
      expected.push("json", "404");
    }
    const { conn, reader } = await exchange(server, raw);
    for (let i = 0; i < expected.length; i++) {
      const r = await reader.next();
      if (expected[i] === "json") assert.match(r.body, /^\{"message"/, `#${i}`);
      else if (expected[i] === "404") assert.equal(r.status, 404, `#${i}`);
      else assert.equal(r.body, expected[i], `#${i}`);
    }
    // Batches that are one run from end to end (the TechEmpower shape).
    for (const n of [2, 16, 64, 100]) {
      await writeAll(conn, bytes(GET("/").repeat(n)));
      for (let i = 0; i < n; i++) assert.equal((await reader.next()).body, "Hello, World!");
    }
    conn.close();
  });
});

Deno.test("http: answers sent from a prebuilt run survive a reader that stalls (EAGAIN, backpressure)", async () => {
  await http(async (server) => {
    // Batches of 16 identical requests, one write each (what wrk sends), so
    // each read is answered from the prebuilt run; 6,000 of them (~12 MB of
    // answers) outgrow the socket buffers while the client is not reading,
    // so sends from the run hit EAGAIN and the rest is queued and paced.
    const batches = 6000;
    const batch = bytes(GET("/").repeat(16));
    const conn = await dial(server.port);
    const writer = (async () => {
      for (let i = 0; i < batches; i++) await writeAll(conn, batch);
    })();
    // Start reading once a send was cut short, not after a fixed pause that
    // a loaded machine may spend before the server sent anything.
    assert.ok(
      await waitFor(() => server.context.counters.sendEagain > 0, 15000),
      "no send was cut short while the client did not read",
    );
    const reader = new ResponseReader(conn);
    for (let i = 0; i < batches * 16; i++) {
      assert.equal((await reader.next()).body, "Hello, World!", `#${i}`);
    }
    await writer;
    assert.ok(
      server.context.counters.sendEagain > 0,
      "no send was cut short: the test did not stall",
    );
    conn.close();
  });
});

Deno.test("http: a repeated request is recognised by its bytes only when that is safe", async () => {
  await http(async (server) => {
    const conn = await dial(server.port);
    const reader = new ResponseReader(conn);
    const get = GET("/");
    // Three the same, then the same split across two reads, then others.
    // The three answers arrive only after the server read the first write,
    // so the split request really spans two reads.
    await writeAll(conn, bytes(get + get + get + get.slice(0, 9)));
    for (let i = 0; i < 3; i++) assert.equal((await reader.next()).body, "Hello, World!");
    await writeAll(conn, bytes(get.slice(9) + GET("/json") + get));
    assert.equal((await reader.next()).body, "Hello, World!");
    assert.match((await reader.next()).body, /message/);
    assert.equal((await reader.next()).body, "Hello, World!");
    // Requests with a body are never answered from their bytes: each body is read.
    const post = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc";
    await writeAll(conn, bytes(post + post + GET("/health")));
    assert.equal((await reader.next()).status, 405);
    assert.equal((await reader.next()).status, 405);
    assert.equal((await reader.next()).body, "OK");
    // HEAD with the same path is a different request.
    await writeAll(conn, bytes(get + "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + get));
    assert.equal((await reader.next()).body, "Hello, World!");
    const head = await reader.next(true);
    assert.equal(head.headers.get("content-length"), "13");
    assert.equal((await reader.next()).body, "Hello, World!");
    // Connection: close twice in one write: one answer, then the close.
    const close = GET("/", "Connection: close\r\n");
    await writeAll(conn, bytes(close + close));
    assert.equal((await reader.next()).headers.get("connection"), "close");
    assert.ok(await reader.closed(), "a second answer after Connection: close");
    conn.close();
  });
});

// ---- HTTP/1.1 corners (RFC 9110 / 9112) ----

const HEAD_ERRORS: [string, string, number][] = [
  ["an invalid Host", "HEAD / HTTP/1.1\r\nHost: a b\r\n\r\n", 400],
  ["a body above --max-body", "HEAD / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", 413],
  [
    "a target above --max-header-bytes",
    `HEAD /${"a".repeat(3000)} HTTP/1.1\r\nHost: t\r\n\r\n`,
    414,
  ],
  [
    "a header section above --max-header-bytes",
    `HEAD / HTTP/1.1\r\nHost: t\r\nX: ${"a".repeat(3000)}\r\n\r\n`,
    431,
  ],
  [
    "an unknown transfer coding",
    "HEAD / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    501,
  ],
  ["HTTP/2.0", "HEAD / HTTP/2.0\r\nHost: t\r\n\r\n", 505],
];

const REASON_LENGTH: Record<number, number> = {
  400: "Bad Request".length,
  408: "Request Timeout".length,
  413: "Content Too Large".length,
  414: "URI Too Long".length,
  431: "Request Header Fields Too Large".length,
  501: "Not Implemented".length,
  505: "HTTP Version Not Supported".length,
};

Deno.test("http: error answers to HEAD carry no body; Content-Length is the GET answer's", async () => {
  await http(async (server) => {
    for (const [what, raw, status] of HEAD_ERRORS) {
      const { conn, reader } = await exchange(server, raw);
      const r = await within(reader.next(true), what);
      assert.equal(r.status, status, what);
      assert.equal(r.headers.get("content-length"), String(REASON_LENGTH[status]), what);
      assert.equal(r.headers.get("connection"), "close", what);
      assert.ok(await reader.closed(), `${what}: bytes after the head of a HEAD answer`);
      conn.close();
      // The same request as GET gets that body.
      const get = await exchange(server, raw.replace("HEAD", "GET"));
      const g = await within(get.reader.next(), what);
      assert.equal(g.status, status);
      assert.equal(g.body.length, REASON_LENGTH[status], what);
      get.conn.close();
    }
  });
});

Deno.test("http: a 408 to a HEAD request that never completes has no body", async () => {
  await withServer({
    app: "http",
    timeouts: { idleMs: 10_000, requestMs: 300, writeMs: 10_000 },
  }, async (server) => {
    for (
      const [raw, head] of [["HEAD / HTTP/1.1\r\nHost: t\r\n", true], [
        "GET / HTTP/1.1\r\n",
        false,
      ]] as const
    ) {
      const { conn, reader } = await exchange(server, raw);
      const r = await within(reader.next(head), "a 408");
      assert.equal(r.status, 408);
      assert.equal(r.headers.get("content-length"), String(REASON_LENGTH[408]));
      if (!head) assert.equal(r.body, "Request Timeout");
      assert.ok(await reader.closed(), "bytes after the 408");
      conn.close();
    }
  });
});

Deno.test("http: Expect: 100-continue with a body to come gets the final status at once, then the close", async () => {
  await http(async (server) => {
    const cases: [string, number][] = [
      ["POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 405],
      ["GET /json HTTP/1.1\r\nHost: t\r\nexpect: 100-Continue\r\nContent-Length: 5\r\n\r\n", 200],
      [
        "PUT /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
        404,
      ],
      ["BREW / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 501],
    ];
    for (const [raw, status] of cases) {
      const { conn, reader } = await exchange(server, raw);
      // No body is sent: the answer must not wait for it.
      const r = await within(reader.next(), `the answer to ${raw.split("\r\n")[0]}`, 3000);
      assert.equal(r.status, status);
      assert.equal(r.headers.get("connection"), "close");
      // A client that sends the body anyway is read and dropped (lingering close), not reset.
      await writeAll(conn, bytes("hello")).catch(() => {});
      assert.ok(await reader.closed(), "bytes after the early answer");
      conn.close();
    }
    // With the body at hand, or no body at all, the exchange is an ordinary one (keep-alive).
    const post =
      "POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello";
    const noBody = "GET / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n";
    const { conn, reader } = await exchange(server, post + noBody + GET("/health"));
    assert.equal((await reader.next()).status, 405);
    const a = await reader.next();
    assert.equal(a.body, "Hello, World!");
    assert.equal(a.headers.has("connection"), false);
    assert.equal((await reader.next()).body, "OK");
    conn.close();
  });
});

Deno.test("http: a chunked body of 9,000 16-byte chunks passes with the default header budget", async () => {
  await withServer({ app: "http" }, async (server) => {
    const chunks = ("10\r\n" + "0123456789abcdef\r\n").repeat(9000);
    const raw = "POST /json HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks +
      "0\r\n\r\n" + GET("/health");
    const { conn, reader } = await exchange(server, raw);
    assert.equal((await reader.next()).status, 405);
    assert.equal((await reader.next()).body, "OK");
    conn.close();
  });
});

Deno.test("http: absolute-form targets are routed by their path", async () => {
  await http(async (server) => {
    const cases: [string, number, string][] = [
      ["http://t/json", 200, '{"message":"Hello, World!"}'],
      ["HTTP://T:8080/health?x=1", 200, "OK"],
      ["https://example.com/plaintext", 200, "Hello, World!"],
      ["http://t", 200, "Hello, World!"],
      ["http://t?q", 200, "Hello, World!"],
      ["http://t/nope", 404, "Not Found"],
      ["ftp://t/json", 404, "Not Found"],
      ["http:/json", 404, "Not Found"],
    ];
    const { conn, reader } = await exchange(
      server,
      cases.map(([t]) => `GET ${t} HTTP/1.1\r\nHost: t\r\n\r\n`).join(""),
    );
    for (const [target, status, body] of cases) {
      const r = await reader.next();
      assert.equal(r.status, status, target);
      assert.equal(r.body, body, target);
    }
    conn.close();
  });
});

Deno.test("http: 501 for a method nobody here implements, 405 with Allow for a known one, 404 stays 404", async () => {
  await http(async (server) => {
    const cases: [string, number][] = [
      ["BREW / HTTP/1.1", 501],
      ["BREW /nope HTTP/1.1", 501],
      ["M-SEARCH * HTTP/1.1", 501],
      ["TRACE / HTTP/1.1", 501],
      ["POST /json HTTP/1.1", 405],
      ["PUT /health HTTP/1.1", 405],
      ["DELETE / HTTP/1.1", 405],
      ["OPTIONS /metrics HTTP/1.1", 405],
      ["PATCH /plaintext HTTP/1.1", 405],
      ["DELETE /nope HTTP/1.1", 404],
      ["get / HTTP/1.1", 501],
    ];
    const { conn, reader } = await exchange(
      server,
      cases.map(([line]) => `${line}\r\nHost: t\r\n\r\n`).join("") + GET("/health"),
    );
    for (const [line, status] of cases) {
      const r = await reader.next();
      assert.equal(r.status, status, line);
      assert.equal(r.headers.has("connection"), false, `${line}: the connection stays open`);
      if (status === 405) assert.equal(r.headers.get("allow"), "GET, HEAD", line);
      else assert.equal(r.headers.has("allow"), false, line);
    }
    assert.equal((await reader.next()).body, "OK");
    conn.close();
  });
});

const BAD_11: [string, string, number][] = [
  ["an invalid Host value", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400],
  ["a Host with a path", "GET / HTTP/1.1\r\nHost: t/x\r\n\r\n", 400],
  ["two Host fields", "GET / HTTP/1.1\r\nHost: t\r\nHost: t\r\n\r\n", 400],
  [
    "a target above --max-header-bytes",
    `GET /${"a".repeat(3000)} HTTP/1.1\r\nHost: t\r\n\r\n`,
    414,
  ],
];

for (const [what, raw, status] of BAD_11) {
  Deno.test(`http: ${what} -> ${status} and close`, async () => {
    await http(async (server) => {
      const { conn, reader } = await exchange(server, raw + GET("/"));
      const r = await reader.next();
      assert.equal(r.status, status);
      assert.equal(r.headers.get("connection"), "close");
      assert.ok(await reader.closed(), "the connection closed after the error");
      conn.close();
    });
  });
}

Deno.test("http: what can never become valid is answered before the line ends", async () => {
  await http(async (server) => {
    const cases: [string, number][] = [
      ["GET / HTTP/5.6", 505],
      ["GET / HTTP/2", 505],
      ["POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999", 413], // --max-body 1024
      ["GE\x01T / HTTP/1.1", 400],
      ["GET /a\x7fb", 400],
      ["GET / HTTP/1.1\r\nHost: a b", 400],
      [`GET /${"a".repeat(3000)}`, 414],
    ];
    for (const [raw, status] of cases) {
      // No CRLF follows: the answer comes anyway, and the connection closes.
      const { conn, reader } = await exchange(server, raw);
      const r = await within(reader.next(), JSON.stringify(raw), 3000);
      assert.equal(r.status, status, JSON.stringify(raw));
      assert.ok(await reader.closed());
      conn.close();
    }
    // HTTP/1.2 is served as HTTP/1.1 (RFC 9110 §2.5).
    const { conn, reader } = await exchange(server, "GET /health HTTP/1.2\r\nHost: t\r\n\r\n");
    const r = await reader.next();
    assert.equal(r.status, 200);
    assert.equal(r.body, "OK");
    assert.equal(r.headers.has("connection"), false);
    conn.close();
  });
});

Deno.test("http: clients' errors are logged at most once a second per status, with a count of the rest", async () => {
  const { cli, port } = await startCli([
    "--app",
    "http",
    "--log-level",
    "debug",
    "--header-timeout",
    "0.3",
  ]);
  try {
    const send = async (raw: string) => {
      const conn = await dial(port);
      await writeAll(conn, bytes(raw));
      const reader = new ResponseReader(conn);
      const r = await within(reader.next(), "an error answer");
      conn.close();
      return r.status;
    };
    // 40 bad requests and 10 slow ones, as fast as they go (well within a second or two).
    const bad = await Promise.all(
      Array.from({ length: 40 }, () => send("GET / HTTP/1.1\r\nHost: a b\r\n\r\n")),
    );
    const slow = await Promise.all(Array.from({ length: 10 }, () => send("GET / HTTP/1.1\r\n")));
    assert.deepEqual(new Set(bad), new Set([400]));
    assert.deepEqual(new Set(slow), new Set([408]));
    // The counts of what was left out come within two seconds (the next once-a-second
    // tick that is a second after the last line). A line is either "fd N: STATUS reason"
    // (with "(K more STATUS not logged)" when it stands for K more) or, when no error of
    // that status followed, "K more STATUS not logged" alone.
    const counted = (status: number) => {
      let lines = 0;
      let total = 0;
      for (const line of cli.stderr.split("\n")) {
        const own = line.includes(`: ${status} `);
        const more = line.match(new RegExp(`(\\d+) more ${status} not logged`));
        if (!own && more === null) continue;
        lines++;
        total += (own ? 1 : 0) + (more === null ? 0 : Number(more[1]));
      }
      return { lines, total };
    };
    await until(
      () => counted(400).total === 40 && counted(408).total === 10,
      "the log accounts for every error",
      10_000,
    );
    const c400 = counted(400);
    const c408 = counted(408);
    console.log(`400: ${c400.lines} lines for 40, 408: ${c408.lines} lines for 10`);
    // One line per second per status: the run took a few seconds at most, and the
    // lines of one status are a second apart (their timestamps, to the millisecond).
    assert.ok(c400.lines <= 4, `${c400.lines} lines for 40 errors:\n${cli.stderr}`);
    assert.ok(c408.lines <= 4, `${c408.lines} lines for 10 errors:\n${cli.stderr}`);
    for (const status of [400, 408]) {
      const times = cli.stderr.split("\n")
        .filter((l) => l.includes(`: ${status} `) || l.includes(` more ${status} not logged`))
        .map((l) => Date.parse(l.slice(0, 23).replace(" ", "T") + "Z"));
      for (let k = 1; k < times.length; k++) {
        assert.ok(
          times[k] - times[k - 1] >= 990,
          `${status} lines ${times[k] - times[k - 1]} ms apart`,
        );
      }
    }
  } finally {
    await cli.stop();
  }
});
