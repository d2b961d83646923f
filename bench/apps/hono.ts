/**
 * The Hono app of ../shared/bench/anchors/deno_serve_hono.ts as a module
 * (`export default app`), so `deno serve` and `reactor serve --module` run
 * the same app in the compare runs.
 *
 * @module
 */

import { Hono } from "hono";

const app = new Hono();
app.get("/", (c) => c.text("Hello, World!"));
app.get("/json", (c) => c.json({ message: "Hello, World!" }));
app.get("/hello/:name", (c) => c.json({ hello: c.req.param("name") }));

export default app;
