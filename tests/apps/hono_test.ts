/**
 * hono_app.ts on a `Deno.serve`-shaped server, over real sockets: routes,
 * query, JSON, middleware headers, redirects, notFound/onError, a streamed
 * answer, an async route. `defineHonoSuite` runs on Deno.serve (the oracle)
 * and, once mod.ts exports `serve`, on reactor's with the same checks.
 *
 * What Deno.serve does with this app (the oracle's rules):
 * - Hono's `streamText` sets `Transfer-Encoding: chunked` on the Response
 *   itself; Deno.serve sends exactly one such header line and chunks the body
 *   once (a server must not add a second header or double-chunk).
 * - `app.fetch` gets Deno.serve's `info` as its second argument (Hono's `env`);
 *   nothing here depends on it.
 *
 * @module
 */

import assert from "node:assert/strict";
import app from "./hono_app.ts";
import { startDenoServe } from "../support/net.ts";
import { HOST, req, type ServeFn, sha256, WAIT_MS, within, withServer } from "./suite.ts";

/** Registers the Hono checks, each test named `${name}: hono: ...`, against `serve`. */
export function defineHonoSuite(name: string, serve: ServeFn): void {
  const test = (title: string, fn: () => Promise<void>) => Deno.test(`${name}: hono: ${title}`, fn);
  const run = (fn: Parameters<typeof withServer>[2]) => withServer(serve, app.fetch, fn);

  test("route params and query", async () => {
    await run(async ({ fetch }) => {
      const user = await fetch("/users/42?fields=name,email");
      assert.equal(user.status, 200);
      assert.match(user.headers.get("content-type")!, /^application\/json/);
      assert.deepEqual(await user.json(), { id: "42", fields: "name,email" });

      const post = await fetch("/users/7/posts/hello%20world");
      assert.deepEqual(await post.json(), { id: "7", post: "hello world" });

      const search = await fetch("/search?q=deno%20serve&tag=a&tag=b");
      assert.deepEqual(await search.json(), {
        q: "deno serve",
        tags: ["a", "b"],
        all: { q: "deno serve", tag: "a" },
      });
    });
  });

  test("JSON body in and out", async () => {
    await run(async ({ fetch, port, connect }) => {
      const payload = { name: "reactor", tags: ["epoll", "ffi"], nested: { ok: true, n: 1.5 } };
      const res = await fetch("/echo", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(payload),
      });
      assert.equal(res.status, 201);
      assert.deepEqual(await res.json(), { received: payload, contentType: "application/json" });

      // The same over a raw connection, then a bad body on the same connection.
      const conn = await connect();
      const body = JSON.stringify({ é: "✓" });
      const raw = await conn.exchange(
        req("POST", "/echo", port, [
          "Content-Type: application/json",
          `Content-Length: ${new TextEncoder().encode(body).length}`,
        ]) + body,
      );
      assert.equal(raw.head.status, 201);
      assert.deepEqual(JSON.parse(raw.text), {
        received: { é: "✓" },
        contentType: "application/json",
      });
      const bad = await conn.exchange(
        req("POST", "/echo", port, ["Content-Type: application/json", "Content-Length: 5"]) +
          "{nope",
      );
      assert.equal(bad.head.status, 400);
      assert.deepEqual(JSON.parse(bad.text), { error: "invalid JSON" });
    });
  });

  test("middleware headers and Server-Timing on every answer", async () => {
    await run(async ({ port, connect }) => {
      const conn = await connect();
      for (const [path, status] of [["/", 200], ["/nope", 404], ["/boom", 500]] as const) {
        const r = await conn.exchange(req("GET", path, port));
        assert.equal(r.head.status, status, `${path}: ${r.text}`);
        assert.equal(r.head.get("x-app"), "hono-test", path);
        assert.match(r.head.get("x-response-time") ?? "", /^\d+\.\d{2}ms$/, path);
        assert.match(r.head.get("server-timing") ?? "", /total;dur=[\d.]+/, path);
      }
    });
  });

  test("redirects", async () => {
    await run(async ({ port, connect, fetch }) => {
      const conn = await connect();
      const found = await conn.exchange(req("GET", "/old", port));
      assert.equal(found.head.status, 302);
      assert.equal(found.head.get("location"), "/new");
      const moved = await conn.exchange(req("GET", "/moved", port));
      assert.equal(moved.head.status, 301);
      assert.equal(moved.head.get("location"), "/new");

      const followed = await fetch("/old");
      assert.equal(followed.status, 200);
      assert.ok(followed.redirected);
      assert.equal(await followed.text(), "the new place");
    });
  });

  test("notFound and onError, and the server serves on", async () => {
    await run(async ({ fetch }) => {
      const missing = await fetch("/no/such/route");
      assert.equal(missing.status, 404);
      assert.deepEqual(await missing.json(), { error: "not found", path: "/no/such/route" });

      const boom = await fetch("/boom");
      assert.equal(boom.status, 500);
      assert.deepEqual(await boom.json(), { error: "kaboom" });

      const teapot = await fetch("/teapot");
      assert.equal(teapot.status, 418);
      assert.equal(await teapot.text(), "short and stout");

      const ok = await fetch("/");
      assert.equal(await ok.text(), "hello from hono");
    });
  });

  test("a streamed answer (hono/streaming) is chunked once, line by line", async () => {
    await run(async ({ port, connect }) => {
      const conn = await connect();
      const r = await conn.exchange(req("GET", "/stream?n=6&delay=15", port));
      assert.equal(r.head.status, 200);
      assert.deepEqual(r.head.all("transfer-encoding"), ["chunked"]);
      assert.equal(r.head.get("content-length"), null);
      assert.equal(r.head.get("content-type"), "text/plain; charset=UTF-8");
      assert.equal(r.text, [0, 1, 2, 3, 4, 5].map((i) => `line ${i}\n`).join(""));
      assert.ok(r.chunks >= 2, `${r.chunks} chunks`);
      // The connection is still good after the terminating chunk.
      const next = await conn.exchange(req("GET", "/", port));
      assert.equal(next.text, "hello from hono");
    });
  });

  test("an async route, 20 at once", async () => {
    await run(async ({ fetch }) => {
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const res = await fetch(`/async?text=item-${i}`);
          assert.equal(res.status, 200);
          const { sha256: got } = await res.json();
          assert.equal(got, await sha256(new TextEncoder().encode(`item-${i}`)));
        }),
      );
    });
  });
}

defineHonoSuite("deno-serve", Deno.serve);

// The `{ fetch }` default export as `deno serve` loads it (the oracle only;
// reactor's `serve --module` would get the same check here once it exists).
Deno.test("deno-serve: hono: `deno serve` runs the module's default export", async () => {
  const { cli, port } = await startDenoServe("tests/apps/hono_app.ts", HOST);
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  try {
    const res = await within(
      fetch(`http://${HOST}:${port}/users/9?fields=x`, { client }),
      WAIT_MS,
      "fetch",
    );
    assert.deepEqual(await res.json(), { id: "9", fields: "x" });
    assert.equal(res.headers.get("x-app"), "hono-test");
  } finally {
    client.close();
    cli.kill("SIGTERM");
    await within(cli.exit(), WAIT_MS, "deno serve exit");
  }
});

// ---------------------------------------------------------------------------
// REACTOR: the same checks on mod.ts's `serve`, switched on by itself once
// mod.ts exports a function named `serve` (see apps_test.ts).
const mod: Record<string, unknown> = { ...(await import("../../mod.ts")) };
if (typeof mod.serve === "function") defineHonoSuite("reactor", mod.serve as ServeFn);
