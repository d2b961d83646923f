/**
 * `reactor serve --module FILE`: deno serve's convention (the default export
 * has `fetch`) through the CLI, with a Hono app; and the one-line errors.
 */

import assert from "node:assert/strict";
import { Cli, startCli } from "./support/net.ts";

const HONO_APP = new URL("./apps/hono_app.ts", import.meta.url).pathname;

Deno.test("module: a Hono app runs unchanged under reactor serve --module", async () => {
  const { cli, port } = await startCli(["--module", HONO_APP]);
  try {
    const base = `http://127.0.0.1:${port}`;
    const root = await fetch(`${base}/`);
    assert.equal(root.status, 200);
    assert.equal(await root.text(), "hello from hono");
    assert.equal(root.headers.get("x-app"), "hono-test", "the middleware ran");
    const params = await fetch(`${base}/users/7/posts/9`);
    assert.deepEqual(await params.json(), { id: "7", post: "9" });
    const echo = await fetch(`${base}/echo`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ a: [1, 2] }),
    });
    assert.equal(echo.status, 201);
    assert.ok(JSON.stringify(await echo.json()).includes('"a":[1,2]'));
    const missing = await fetch(`${base}/nope`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    const redirect = await fetch(`${base}/old`, { redirect: "manual" });
    assert.equal(redirect.status, 302);
    assert.equal(redirect.headers.get("location"), "/new");
    await redirect.body?.cancel();
  } finally {
    assert.equal(await cli.stop(), 0);
  }
});

Deno.test("module: a module without fetch, or --module with another app, is one line and exit 2", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/nofetch.ts`, "export default { hello: 1 };\n");
    for (
      const [args, re] of [
        [["serve", "--port", "0", "--module", `${dir}/nofetch.ts`], /default export has no fetch/],
        [["serve", "--port", "0", "--module", `${dir}/missing.ts`], /cannot import it/],
        [["serve", "--port", "0", "--app", "echo", "--module", HONO_APP], /only for --app http/],
      ] as [string[], RegExp][]
    ) {
      const cli = new Cli(args);
      assert.equal(await cli.exit(), 2, cli.stderr);
      const lines = cli.stderr.trim().split("\n");
      assert.equal(lines.length, 1, cli.stderr);
      assert.match(lines[0], re);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("module: --access-log writes one line per request on stdout (combined and json)", async () => {
  const app = new URL("../bench/apps/hello.ts", import.meta.url).pathname;
  for (const format of ["combined", "json"]) {
    const { cli, port } = await startCli(["--module", app, "--access-log", format]);
    try {
      for (const path of ["/one?x=1", "/two"]) {
        const r = await fetch(`http://127.0.0.1:${port}${path}`, {
          headers: { "user-agent": 'agent "quoted"', referer: "http://r/" },
        });
        await r.text();
      }
      const out = await cli.waitOutput(/\/two/);
      assert.ok(out);
    } finally {
      assert.equal(await cli.stop(), 0);
    }
    const lines = cli.stdout.trim().split("\n");
    assert.equal(lines.length, 2, cli.stdout);
    if (format === "json") {
      const rec = JSON.parse(lines[0]);
      assert.equal(rec.method, "GET");
      assert.equal(rec.target, "/one?x=1");
      assert.equal(rec.status, 200);
      assert.equal(rec.userAgent, 'agent "quoted"');
    } else {
      assert.match(
        lines[0],
        /^127\.0\.0\.1 - - \[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET \/one\?x=1 HTTP\/1\.1" 200 - "http:\/\/r\/" "agent \\"quoted\\""$/,
      );
    }
  }
});
