/**
 * The native API over loopback TCP, raw sockets on the client side: every
 * reply kind, the request accessors, keep-alive and HTTP/1.0, pipelining (16
 * requests in one write answered in order and in one read), async handlers
 * (the request view detached and still valid, answers still in order),
 * bodies, errors (500 on throw, the parser's status on bad input) and the
 * head cache never serving a stale head or body.
 */
import assert from "node:assert/strict";
import { type NativeHandler, type NativeReply, type NativeRequest, Router } from "./native.ts";
import { type NativeServer, serveNative } from "../../../server/serve_native.ts";
import { sleep } from "../../../tests/support/net.ts";
import type { Timeouts } from "../../context.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** One parsed response. */
interface Reply {
  status: number;
  /** Header fields in order, names lower-cased. */
  fields: [string, string][];
  headers: Map<string, string>;
  body: string;
  bodyBytes: Uint8Array;
}

/** A raw HTTP/1.1 client that reads Content-Length framed responses off a buffer. */
class Client {
  #buf = new Uint8Array(0);
  /** How many reads the last `readReplies` took. */
  reads = 0;
  private constructor(readonly conn: Deno.TcpConn) {}

  static async open(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async send(text: string | Uint8Array): Promise<void> {
    const data = typeof text === "string" ? enc.encode(text) : text;
    let off = 0;
    while (off < data.length) off += await this.conn.write(data.subarray(off));
  }

  /** Reads one more chunk into the buffer; false at EOF. */
  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(256 << 10);
    const n = await this.conn.read(chunk);
    if (n === null) return false;
    this.reads++;
    const grown = new Uint8Array(this.#buf.length + n);
    grown.set(this.#buf);
    grown.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = grown;
    return true;
  }

  /** Parses one response from the buffer, or null if it is not all there. */
  #take(head: boolean): Reply | null {
    const b = this.#buf;
    let end = -1;
    for (let i = 0; i + 3 < b.length; i++) {
      if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) {
        end = i;
        break;
      }
    }
    if (end < 0) return null;
    const lines = dec.decode(b.subarray(0, end)).split("\r\n");
    const status = Number(lines[0].split(" ")[1]);
    const fields: [string, string][] = lines.slice(1).map((l) => {
      const c = l.indexOf(":");
      return [l.slice(0, c).toLowerCase(), l.slice(c + 1).trim()];
    });
    const headers = new Map(fields);
    const len = head || status === 204 || status === 304 || status < 200
      ? 0
      : Number(headers.get("content-length") ?? 0);
    if (b.length < end + 4 + len) return null;
    const bodyBytes = b.slice(end + 4, end + 4 + len);
    this.#buf = b.slice(end + 4 + len);
    return { status, fields, headers, body: dec.decode(bodyBytes), bodyBytes };
  }

  /** Reads `count` responses (`head`: to HEAD requests: no bodies). */
  async readReplies(count: number, head = false): Promise<Reply[]> {
    this.reads = 0;
    const out: Reply[] = [];
    while (out.length < count) {
      const r = this.#take(head);
      if (r !== null) {
        out.push(r);
        continue;
      }
      if (!await this.#fill()) throw new Error(`closed after ${out.length} of ${count} replies`);
    }
    return out;
  }

  async reply(head = false): Promise<Reply> {
    return (await this.readReplies(1, head))[0];
  }

  /** Whether the server closes the connection (EOF) within `ms`, nothing else arriving. */
  async closes(ms = 2000): Promise<boolean> {
    const timer = sleep(ms).then(() => "timeout" as const);
    const chunk = new Uint8Array(1024);
    const read = this.conn.read(chunk).then((n) => n, () => null);
    const r = await Promise.race([read, timer]);
    return r === null;
  }

  get buffered(): number {
    return this.#buf.length;
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

/** A GET request line and Host. */
function get(path: string, extra = ""): string {
  return `GET ${path} HTTP/1.1\r\nHost: t\r\n${extra}\r\n`;
}

async function withServer(
  router: Router,
  fn: (port: number, server: NativeServer) => Promise<void>,
  timeouts: Timeouts | null = null,
): Promise<void> {
  const server = serveNative(
    { port: 0, hostname: "127.0.0.1", onListen: () => {}, timeouts },
    router,
  );
  try {
    await fn(server.addr.port, server);
  } finally {
    await server.shutdown();
  }
}

Deno.test("native: every reply kind, status and headers", async () => {
  const router = new Router()
    .get("/text", (_q, s) => s.text("héllo ✓"))
    .get("/json", (_q, s) => s.json({ a: 1, b: [true, null] }))
    .get("/bytes", (_q, s) => s.bytes(new Uint8Array([0, 1, 2, 255])))
    .get("/end", (_q, s) => s.status(202).end())
    .get("/none", (_q, s) => s.status(204).text("dropped"))
    .get("/custom", (_q, s) => {
      s.status(201).header("Content-Type", "text/csv").header("X-One", "1").header("x-one", "2");
      s.text("a,b\n");
    })
    .get("/weird", (_q, s) => s.status(299).text(""));
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    const paths = ["/text", "/json", "/bytes", "/end", "/none", "/custom", "/weird"];
    for (const p of paths) await c.send(get(p));
    const [text, json, bytes, end, none, custom, weird] = await c.readReplies(paths.length);
    assert.equal(text.status, 200);
    assert.equal(text.body, "héllo ✓");
    assert.equal(text.headers.get("content-type"), "text/plain; charset=utf-8");
    assert.equal(text.headers.get("content-length"), String(enc.encode("héllo ✓").length));
    assert.match(text.headers.get("date")!, /^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/);
    assert.equal(text.headers.has("connection"), false);
    assert.deepEqual(JSON.parse(json.body), { a: 1, b: [true, null] });
    assert.equal(json.headers.get("content-type"), "application/json");
    assert.deepEqual([...bytes.bodyBytes], [0, 1, 2, 255]);
    assert.equal(bytes.headers.get("content-type"), "application/octet-stream");
    assert.equal(end.status, 202);
    assert.equal(end.headers.get("content-length"), "0");
    assert.equal(end.headers.has("content-type"), false);
    assert.equal(none.status, 204);
    assert.equal(none.headers.has("content-length"), false);
    assert.equal(none.body, "");
    assert.equal(custom.status, 201);
    assert.equal(custom.headers.get("content-type"), "text/csv");
    assert.deepEqual(custom.fields.filter(([n]) => n === "x-one"), [["x-one", "1"], [
      "x-one",
      "2",
    ]]);
    assert.equal(custom.body, "a,b\n");
    assert.equal(weird.status, 299);
    assert.equal(c.buffered, 0); // nothing more than announced (204's body dropped)
    c.close();
  });
});

Deno.test("native: the request view: method, path, target, params, query, headers", async () => {
  let seen: Record<string, unknown> = {};
  const record: NativeHandler = (req, res) => {
    seen = {
      method: req.method,
      path: req.path,
      target: req.target,
      id: req.param("id"),
      first: req.param(0),
      rest: req.path.startsWith("/files") ? req.param("*") : null,
      q: req.query("q"),
      plus: req.query("plus"),
      flag: req.query("flag"),
      missing: req.query("nope"),
      encodedKey: req.query("a b"),
      ua: req.header("user-agent"),
      multi: req.header("X-MULTI"),
      absent: req.header("x-absent"),
      detached: req.detached,
    };
    res.end();
  };
  const router = new Router().get("/users/:id", record).on("PURGE", "/files/:id/*", record)
    .get("/bad/:id", (req, res) => res.text(req.param("nope")));
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    await c.send(
      "GET /users/caf%C3%A9?q=x%20y&plus=a+b&flag&a+b=k HTTP/1.1\r\nHost: t\r\n" +
        "User-Agent: test/1\r\nX-Multi: 1\r\nx-multi:  2 \r\n\r\n",
    );
    await c.reply();
    assert.deepEqual(seen, {
      method: "GET",
      path: "/users/caf%C3%A9", // raw: not decoded
      target: "/users/caf%C3%A9?q=x%20y&plus=a+b&flag&a+b=k",
      id: "caf%C3%A9",
      first: "caf%C3%A9",
      rest: null,
      q: "x y",
      plus: "a b",
      flag: "",
      missing: null,
      encodedKey: "k",
      ua: "test/1",
      multi: "1, 2",
      absent: null,
      detached: false,
    });
    await c.send("PURGE http://t/files/7/a/b.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    await c.reply();
    assert.equal(seen.method, "PURGE");
    assert.equal(seen.path, "/files/7/a/b.txt");
    assert.equal(seen.id, "7");
    assert.equal(seen.rest, "a/b.txt");
    // An unknown parameter is the handler's error: 500, and the connection goes on.
    await c.send(get("/bad/1") + get("/users/2"));
    const [bad, ok] = await c.readReplies(2);
    assert.equal(bad.status, 500);
    assert.equal(ok.status, 200);
    c.close();
  });
});

Deno.test("native: 404, 405 with Allow, HEAD by GET without a body", async () => {
  const router = new Router()
    .get("/hello", (_q, s) => s.text("Hello, World!"))
    .delete("/hello", (_q, s) => s.end());
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    await c.send(get("/nothing"));
    const nf = await c.reply();
    assert.equal(nf.status, 404);
    assert.equal(nf.body, "Not Found");
    await c.send("PUT /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    const na = await c.reply();
    assert.equal(na.status, 405);
    assert.equal(na.headers.get("allow"), "GET, HEAD, DELETE");
    await c.send("HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    const head = await c.reply(true);
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), "13");
    await c.send("HEAD /nothing HTTP/1.1\r\nHost: t\r\n\r\n");
    assert.equal((await c.reply(true)).status, 404);
    // Nothing else came: the HEAD answers had no bodies.
    await c.send(get("/hello"));
    assert.equal((await c.reply()).body, "Hello, World!");
    assert.equal(c.buffered, 0);
    c.close();
  });
});

Deno.test("native: keep-alive, HTTP/1.0, Connection: close", async () => {
  const router = new Router().get("/", (_q, s) => s.text("hi"));
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    for (let k = 0; k < 5; k++) {
      await c.send(get("/"));
      assert.equal((await c.reply()).body, "hi");
    }
    c.close();
    const ten = await Client.open(port);
    await ten.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const ka = await ten.reply();
    assert.equal(ka.headers.get("connection"), "keep-alive");
    await ten.send("GET / HTTP/1.0\r\n\r\n");
    const last = await ten.reply();
    assert.equal(last.headers.get("connection"), "close");
    assert.equal(last.body, "hi");
    assert.ok(await ten.closes(), "HTTP/1.0 without keep-alive closes");
    ten.close();
    const closing = await Client.open(port);
    await closing.send(get("/", "Connection: close\r\n") + get("/"));
    const r = await closing.reply();
    assert.equal(r.headers.get("connection"), "close");
    assert.ok(await closing.closes(), "closes after Connection: close; the next is not answered");
    closing.close();
  });
});

Deno.test("native: 16 pipelined requests in one write, answered in order in one read", async () => {
  const router = new Router()
    .get("/n/:i", (req, res) => res.text(`reply ${req.param("i")}`))
    .get("/", (_q, s) => s.text("Hello, World!"));
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    for (const round of [0, 1, 2]) {
      let batch = "";
      for (let i = 0; i < 16; i++) batch += get(`/n/${round * 100 + i}`);
      await c.send(batch);
      const replies = await c.readReplies(16);
      assert.deepEqual(
        replies.map((r) => r.body),
        Array.from({ length: 16 }, (_, i) => `reply ${round * 100 + i}`),
      );
      assert.equal(c.reads, 1, `round ${round}: the 16 answers came in ${c.reads} reads`);
    }
    // The same request 16 times (answered from the memo after the first).
    await c.send(get("/").repeat(16));
    const same = await c.readReplies(16);
    assert.ok(same.every((r) => r.body === "Hello, World!" && r.status === 200));
    assert.equal(c.reads, 1);
    c.close();
  });
});

Deno.test("native: an async handler: detached view still valid, answers still in order", async () => {
  const seen: unknown[] = [];
  let firstReq: NativeRequest | null = null;
  const router = new Router()
    .get("/slow/:id", async (req, res) => {
      firstReq = req;
      await sleep(30);
      // By now the connection has handled the next requests with other objects.
      seen.push({
        detached: req.detached,
        id: req.param("id"),
        path: req.path,
        q: req.query("q"),
        h: req.header("x-h"),
      });
      res.header("X-Id", req.param("id")).json({ id: req.param("id") });
    })
    .get("/fast/:id", (req, res) => {
      assert.notEqual(req, firstReq);
      res.text(`fast ${req.param("id")}`);
    })
    .get("/early", async (_req, res) => {
      res.text("early"); // replied before the first await
      await sleep(5);
    });
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    await c.send(
      get("/slow/a?q=1", "X-H: one\r\n") + get("/fast/b") + get("/slow/c?q=3", "X-H: three\r\n") +
        get("/fast/d") + get("/early") + get("/fast/e"),
    );
    const r = await c.readReplies(6);
    assert.deepEqual(r.map((x) => x.body), [
      '{"id":"a"}',
      "fast b",
      '{"id":"c"}',
      "fast d",
      "early",
      "fast e",
    ]);
    assert.equal(r[0].headers.get("x-id"), "a");
    assert.deepEqual(seen, [
      { detached: true, id: "a", path: "/slow/a", q: "1", h: "one" },
      { detached: true, id: "c", path: "/slow/c", q: "3", h: "three" },
    ]);
    c.close();
  });
});

Deno.test("native: request bodies: Content-Length, chunked, async, none; 100-continue", async () => {
  const router = new Router()
    .post("/echo", async (req, res) => {
      const body = await req.body();
      res.header("X-Len", String(body.length)).bytes(body);
    })
    .post("/later", async (req, res) => {
      await sleep(10); // the body has arrived meanwhile: kept for the detached view
      res.text(new TextDecoder().decode(await req.body()));
    })
    .post("/ignore", (_req, res) => res.text("ignored"));
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    const big = new Uint8Array(300_000).map((_, i) => i % 251);
    await c.send(
      enc.encode(`POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: ${big.length}\r\n\r\n`),
    );
    await c.send(big);
    const echoed = await c.reply();
    assert.equal(echoed.headers.get("x-len"), String(big.length));
    assert.deepEqual(echoed.bodyBytes, big);
    await c.send(
      "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert.equal((await c.reply()).body, "hello world");
    await c.send("POST /later HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd" + get("/x"));
    const [later, nf] = await c.readReplies(2);
    assert.equal(later.body, "abcd");
    assert.equal(nf.status, 404);
    // A sync handler that does not read the body: discarded, the connection goes on.
    await c.send("POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nxxxxx" + get("/x"));
    const [ign, after] = await c.readReplies(2);
    assert.equal(ign.body, "ignored");
    assert.equal(after.status, 404);
    await c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert.equal((await c.reply()).headers.get("x-len"), "0");
    c.close();
    // Expect: 100-continue is answered when the handler asks for the body.
    const e = await Client.open(port);
    await e.send(
      "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    const cont = await e.reply();
    assert.equal(cont.status, 100);
    await e.send("abc");
    assert.equal((await e.reply()).body, "abc");
    e.close();
    // Not wanted (no route): answered at once, and the connection cannot be reused.
    const n = await Client.open(port);
    await n.send(
      "POST /none HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    assert.equal((await n.reply()).status, 404);
    assert.ok(await n.closes());
    n.close();
  });
});

Deno.test("native: 500 when a handler throws, rejects or does not reply; served on", async () => {
  const router = new Router()
    .get("/throw", () => {
      throw new Error("boom (expected by the test)");
    })
    .get("/reject", async () => {
      await sleep(1);
      throw new Error("async boom (expected by the test)");
    })
    .get("/silent", () => {})
    .get("/silent-async", async () => {
      await sleep(1);
    })
    .get("/twice", (_q, s) => {
      s.text("first");
      s.text("second"); // throws: the reply is out already, so no 500 follows
    })
    .get("/badheader", (_q, s) => s.header("Content-Length", "3").text("abc"))
    .get("/ok", (_q, s) => s.text("ok"));
  await withServer(router, async (port, server) => {
    const c = await Client.open(port);
    const paths = ["/throw", "/ok", "/reject", "/silent", "/silent-async", "/twice", "/badheader"];
    await c.send(paths.map((p) => get(p)).join("") + get("/ok"));
    const r = await c.readReplies(paths.length + 1);
    assert.deepEqual(r.map((x) => x.status), [500, 200, 500, 500, 500, 200, 500, 200]);
    assert.equal(r[5].body, "first");
    assert.equal(r[0].body, "Internal Server Error");
    const metrics = server.server.instance.metrics!();
    assert.equal(metrics.find((m) => m.name === "native_handler_errors_total")?.value, 6);
    c.close();
  });
});

Deno.test("native: bad requests get the parser's status and a close", async () => {
  const router = new Router().get("/", (_q, s) => s.text("hi"));
  await withServer(router, async (port) => {
    for (
      const [raw, status] of [
        ["GET / HTTP/1.1\r\n\r\n", 400], // no Host
        ["GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505],
        ["GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501],
        [`GET /${"a".repeat(20_000)} HTTP/1.1\r\nHost: t\r\n\r\n`, 414],
      ] as const
    ) {
      const c = await Client.open(port);
      await c.send(get("/") + raw);
      const [ok, bad] = await c.readReplies(2);
      assert.equal(ok.status, 200);
      assert.equal(bad.status, status, raw.slice(0, 30));
      assert.equal(bad.headers.get("connection"), "close");
      assert.ok(await c.closes());
      c.close();
    }
  });
});

Deno.test("native: the head cache never serves a stale head or body", async () => {
  let body = "aaaa";
  let status = 200;
  let header = "1";
  const reply = (_q: NativeRequest, s: NativeReply) =>
    s.status(status).header("X-V", header).text(body);
  const router = new Router().get("/", reply).get("/other", (_q, s) => s.text("bbbb"));
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    const check = async (want: { body: string; status: number; x: string }) => {
      await c.send(get("/"));
      const r = await c.reply();
      assert.deepEqual({ body: r.body, status: r.status, x: r.headers.get("x-v") }, want);
    };
    await check({ body: "aaaa", status: 200, x: "1" });
    await check({ body: "aaaa", status: 200, x: "1" }); // second time: the full bytes cached
    await check({ body: "aaaa", status: 200, x: "1" });
    body = "cccc"; // same length, other bytes
    await check({ body: "cccc", status: 200, x: "1" });
    body = "cc";
    await check({ body: "cc", status: 200, x: "1" });
    status = 201;
    await check({ body: "cc", status: 201, x: "1" });
    header = "2";
    await check({ body: "cc", status: 201, x: "2" });
    await c.send(get("/other"));
    assert.equal((await c.reply()).body, "bbbb");
    await check({ body: "cc", status: 201, x: "2" });
    // The Date header moves on: a request a second later carries the new date.
    await c.send(get("/"));
    const before = (await c.reply()).headers.get("date");
    await sleep(1100);
    await c.send(get("/"));
    const after = (await c.reply()).headers.get("date");
    assert.notEqual(after, before);
    c.close();
  });
});

Deno.test("native: repeated requests (answered without parsing) stay right", async () => {
  let calls = 0;
  const router = new Router()
    .get("/flip", (req, res) => {
      const n = calls++;
      if (n % 2 === 1) {
        // Every other call is async: the view is detached and replaced.
        return (async () => {
          await sleep(2);
          res.text(`async ${n} ${req.path} ${req.header("x-k")}`);
        })();
      }
      res.text(`sync ${n} ${req.path} ${req.header("x-k")}`);
    })
    .get("/same", (_q, s) => s.text("same"));
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    await c.send(get("/flip", "X-K: v\r\n").repeat(6));
    const flips = await c.readReplies(6);
    assert.deepEqual(
      flips.map((r) => r.body),
      [0, 1, 2, 3, 4, 5].map((n) => `${n % 2 ? "async" : "sync"} ${n} /flip v`),
    );
    // A mix in one write: runs of the same cached reply, broken by others and by HEAD.
    const mix = [
      get("/same"),
      get("/same"),
      get("/same"),
      get("/nope"),
      get("/same"),
      "HEAD /same HTTP/1.1\r\nHost: t\r\n\r\n",
      get("/same"),
    ];
    await c.send(mix.join(""));
    const r: Reply[] = [];
    for (let k = 0; k < mix.length; k++) r.push(await c.reply(k === 5));
    assert.deepEqual(r.map((x) => [x.status, x.body]), [
      [200, "same"],
      [200, "same"],
      [200, "same"],
      [404, "Not Found"],
      [200, "same"],
      [200, ""],
      [200, "same"],
    ]);
    assert.equal(c.buffered, 0);
    // A route added while serving is found, even for bytes that came before.
    await c.send(get("/late"));
    assert.equal((await c.reply()).status, 404);
    router.get("/late", (_q, s) => s.text("late"));
    await c.send(get("/late"));
    assert.equal((await c.reply()).body, "late");
    // Many pipelined answers at once: more than one run's worth, all in order.
    await c.send(get("/same").repeat(100));
    const many = await c.readReplies(100);
    assert.ok(many.every((x) => x.body === "same"));
    c.close();
  });
});

Deno.test("native: Connection: close after pipelined answers sends them all first", async () => {
  const router = new Router().get("/", (_q, s) => s.text("x"));
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    await c.send(get("/").repeat(5) + get("/", "Connection: close\r\n"));
    const r = await c.readReplies(6);
    assert.ok(r.every((x) => x.body === "x"));
    assert.equal(r[5].headers.get("connection"), "close");
    assert.ok(await c.closes());
    c.close();
  });
});

Deno.test("native: a client that does not read: parsing stops at high water, all answered", async () => {
  const big = "z".repeat(200_000);
  const router = new Router().get("/big/:i", (req, res) => res.text(`${req.param("i")}:${big}`));
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    let batch = "";
    for (let i = 0; i < 40; i++) batch += get(`/big/${i}`);
    await c.send(batch);
    await sleep(200); // the answers pile up unread: the server stops at its high-water mark
    const r = await c.readReplies(40);
    assert.deepEqual(
      r.map((x) => x.body.slice(0, x.body.indexOf(":"))),
      [...Array(40).keys()].map(String),
    );
    assert.ok(r.every((x) => x.body.length === x.body.indexOf(":") + 1 + big.length));
    c.close();
  });
});

Deno.test("native: more async requests in flight than allowed: the rest waits, all in order", async () => {
  const router = new Router().get("/a/:i", async (req, res) => {
    await sleep(1 + (Number(req.param("i")) % 3));
    res.text(req.param("i"));
  });
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    let batch = "";
    for (let i = 0; i < 80; i++) batch += get(`/a/${i}`);
    await c.send(batch);
    const r = await c.readReplies(80);
    assert.deepEqual(r.map((x) => x.body), [...Array(80).keys()].map(String));
    c.close();
  });
});

Deno.test("native: a request not complete in time gets 408 and a close", async () => {
  const router = new Router().get("/", (_q, s) => s.text("hi"));
  await withServer(router, async (port) => {
    const c = await Client.open(port);
    await c.send(get("/") + "GET / HTTP/1.1\r\nHost: t\r\n"); // the second never ends
    const [ok, late] = await c.readReplies(2);
    assert.equal(ok.body, "hi");
    assert.equal(late.status, 408);
    assert.equal(late.headers.get("connection"), "close");
    assert.ok(await c.closes());
    c.close();
  }, { idleMs: 0, requestMs: 300, writeMs: 0 });
});
