/**
 * A small Hono app, the kind people run on `Deno.serve`: route params, query,
 * JSON in and out, a middleware adding headers (and Hono's Server-Timing), a
 * redirect, notFound and onError handlers, a streamed response and an async
 * route. The default export is the app itself, an object with `fetch`, so
 * `deno serve tests/apps/hono_app.ts` (and later `reactor serve --module`)
 * can load it; hono_test.ts runs it through `serve(options, app.fetch)`.
 *
 * @module
 */

import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { streamText } from "hono/streaming";
import { timing } from "hono/timing";

const app = new Hono();

// Hono's own Server-Timing middleware ("total;dur=...").
app.use("*", timing());

// Ours: a header on every answer (errors and 404s included) and how long it took.
app.use("*", async (c, next) => {
  const started = performance.now();
  await next();
  c.header("x-app", "hono-test");
  c.header("x-response-time", `${(performance.now() - started).toFixed(2)}ms`);
});

app.get("/", (c) => c.text("hello from hono"));

app.get(
  "/users/:id",
  (c) => c.json({ id: c.req.param("id"), fields: c.req.query("fields") ?? null }),
);

app.get("/users/:id/posts/:post", (c) => c.json(c.req.param()));

app.get("/search", (c) =>
  c.json({
    q: c.req.query("q") ?? null,
    tags: c.req.queries("tag") ?? [],
    all: c.req.query(),
  }));

app.post("/echo", async (c) => {
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    return c.json({ error: "invalid JSON" }, 400);
  }
  return c.json({ received: body, contentType: c.req.header("content-type") ?? null }, 201);
});

app.get("/old", (c) => c.redirect("/new"));
app.get("/moved", (c) => c.redirect("/new", 301));
app.get("/new", (c) => c.text("the new place"));

/** `n` lines, `delay` ms apart (both from the query; 5 and 10 by default). */
app.get("/stream", (c) => {
  const n = Number(c.req.query("n") ?? 5);
  const delay = Number(c.req.query("delay") ?? 10);
  return streamText(c, async (stream) => {
    for (let i = 0; i < n; i++) {
      await stream.writeln(`line ${i}`);
      await stream.sleep(delay);
    }
  });
});

app.get("/async", async (c) => {
  await new Promise((resolve) => setTimeout(resolve, 15));
  const input = new TextEncoder().encode(c.req.query("text") ?? "");
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", input));
  return c.json({
    sha256: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""),
  });
});

app.get("/boom", () => {
  throw new Error("kaboom");
});

app.get("/teapot", () => {
  throw new HTTPException(418, { message: "short and stout" });
});

app.notFound((c) => c.json({ error: "not found", path: c.req.path }, 404));

app.onError((err, c) => {
  if (err instanceof HTTPException) return err.getResponse();
  return c.json({ error: err.message }, 500);
});

export default app;
