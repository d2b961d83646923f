/**
 * Static files inside the fetch app (`serve({ files })`, `--root` with
 * `--module`): answers stay in request order when a file is asked for
 * behind a handler still running, what is not a file goes to the handler,
 * and a file answer that never got written releases its file.
 */
import assert from "node:assert/strict";
import { type NativeHandler, Router, serve, serveNative } from "../mod.ts";
import {
  assertFdsBackTo,
  dial,
  openFdCount,
  readToEnd,
  sleep,
  startCli,
  within,
  writeAll,
} from "./support/net.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Sends `raw` on a fresh connection; returns all the server sent until it closed. */
async function askToEnd(port: number, raw: string, what = raw.split("\r\n")[0]): Promise<string> {
  const conn = await dial(port);
  try {
    await writeAll(conn, enc.encode(raw));
    return dec.decode(await within(readToEnd(conn), what));
  } finally {
    conn.close();
  }
}

async function tree(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "reactor-static-app-" });
  await Deno.writeTextFile(`${root}/hello.txt`, "hello from a file\n");
  const big = new Uint8Array(2 << 20).map((_, i) => i % 251);
  await Deno.writeFile(`${root}/big.bin`, big);
  return root;
}

Deno.test("serve({ files }): a file asked for behind a slow handler is answered after it, in order; the rest goes to the handler", async () => {
  const root = await tree();
  const server = serve({
    port: 0,
    hostname: "127.0.0.1",
    onListen() {},
    files: { root },
  }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/slow") await sleep(100);
    return new Response(`handler ${req.method} ${url.pathname}\n`);
  });
  try {
    const text = await askToEnd(
      server.addr.port,
      "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" +
        "GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n" +
        "POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" +
        "GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "all four answers",
    );
    const bodies = text.split("HTTP/1.1 ").slice(1).map((r) => r.split("\r\n\r\n")[1]);
    assert.deepEqual(bodies, [
      "handler GET /slow\n",
      "hello from a file\n",
      "handler POST /hello.txt\n",
      "handler GET /missing\n",
    ]);
  } finally {
    await server.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("serve({ files }) without a handler: 404 and 405 for what is no file; a big file cut by the client leaves no fd", async () => {
  const root = await tree();
  const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {}, files: { root } });
  try {
    const port = server.addr.port;
    assert.match(
      await askToEnd(port, "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
      /^HTTP\/1.1 404 /,
    );
    const post = await askToEnd(
      port,
      "POST /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    assert.match(post, /^HTTP\/1.1 405 /);
    assert.match(post, /\r\nAllow: GET, HEAD\r\n/);
    const before = openFdCount();
    for (let i = 0; i < 20; i++) {
      const c = await dial(port);
      await writeAll(c, enc.encode("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"));
      const buf = new Uint8Array(1024);
      await c.read(buf); // the start of it, then gone
      c.close();
    }
    const after = await assertFdsBackTo(before, 1);
    console.log(`fds: ${before} before, ${after} after 20 clients left mid-file`);
    assert.equal(server.server.context.counters.fileTruncations, 0);
  } finally {
    await server.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("serveNative({ files }): routes first, files for what no route matches, in order behind an async route", async () => {
  const root = await tree();
  const router = new Router<NativeHandler>()
    .get("/hello.txt", (_req, res) => res.text("the route wins\n"))
    .get("/slow", async (_req, res) => {
      await sleep(100);
      res.text("slow route\n");
    });
  const server = serveNative(
    { port: 0, hostname: "127.0.0.1", onListen() {}, files: { root } },
    router,
  );
  try {
    await Deno.writeTextFile(`${root}/page.txt`, "a page\n");
    const text = await askToEnd(
      server.addr.port,
      "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" +
        "GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n" +
        "GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n" +
        "GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n" +
        "GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "all five answers",
    );
    const answers = text.split("HTTP/1.1 ").slice(1);
    assert.deepEqual(answers.map((r) => r.split("\r\n\r\n")[1]), [
      "slow route\n",
      "a page\n",
      "a page\n",
      "the route wins\n",
      "Not Found",
    ]);
    assert.match(answers[1], /^200 OK\r\n/);
    assert.match(answers[1], /\r\nETag: "/);
    // The same request bytes twice in a row (the native memo) are files both times.
    const again = "GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n";
    const t2 = await askToEnd(
      server.addr.port,
      again + again + again.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
      "three answers",
    );
    assert.equal(t2.split("a page\n").length - 1, 3, t2);
  } finally {
    await server.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("--root with --module and --access-log: static answers, written at once or queued behind a slow handler, are logged with their status, bytes, referer and user agent", async () => {
  const root = await tree();
  const app = await Deno.makeTempFile({ prefix: "slow-app-", suffix: ".ts" });
  await Deno.writeTextFile(
    app,
    `export default { async fetch(req) {
      await new Promise((r) => setTimeout(r, 100));
      return new Response("slow " + new URL(req.url).pathname);
    } };\n`,
  );
  const { cli, port } = await startCli(["--root", root, "--module", app, "--access-log", "json"]);
  try {
    const headers = "Host: x\r\nReferer: http://r/\r\nUser-Agent: tester\r\n";
    const text = await askToEnd(
      port,
      `GET /hello.txt HTTP/1.1\r\n${headers}\r\n` + // at once
        `GET /slow HTTP/1.1\r\n${headers}\r\n` +
        `GET /hello.txt HTTP/1.1\r\n${headers}Connection: close\r\n\r\n`, // queued behind /slow
      "three answers",
    );
    assert.equal(text.split("hello from a file\n").length - 1, 2, text);
    await cli.waitOutput(/"target":"\/hello.txt".*\n.*\n.*"target":"\/hello.txt"/s);
  } finally {
    assert.equal(await cli.stop(), 0);
    await Deno.remove(root, { recursive: true });
    await Deno.remove(app);
  }
  const lines = cli.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => [l.target, l.status, l.bytes]), [
    ["/hello.txt", 200, 18],
    ["/slow", 200, -1],
    ["/hello.txt", 200, 18],
  ]);
  for (const l of [lines[0], lines[2]]) {
    assert.equal(l.referer, "http://r/");
    assert.equal(l.userAgent, "tester");
  }
});
