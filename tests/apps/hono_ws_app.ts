/**
 * A Hono app with a WebSocket route (`upgradeWebSocket` from `hono/deno`),
 * as written for Deno.serve: served unchanged by Deno.serve, by reactor's
 * `serve`, and by `reactor serve --module` (hono_ws_test.ts).
 *
 * @module
 */

import { Hono } from "hono";
import { upgradeWebSocket } from "hono/deno";

const app = new Hono();

app.get("/", (c) => c.text("hello from hono"));

app.get(
  "/ws",
  upgradeWebSocket((c) => {
    const name = c.req.query("name") ?? "anon";
    return {
      onOpen(_event, ws) {
        ws.send(`welcome ${name}`);
      },
      onMessage(event, ws) {
        if (event.data === "bye") ws.close(4000, `bye ${name}`);
        else ws.send(`echo: ${event.data}`);
      },
    };
  }),
);

export default app;
