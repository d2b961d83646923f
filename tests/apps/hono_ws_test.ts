/**
 * Unchanged WebSocket apps on three servers with the same expectations: the
 * Hono app of hono_ws_app.ts (`upgradeWebSocket` from `hono/deno`) on
 * Deno.serve (the oracle), on reactor's `serve`, and on `reactor serve
 * --module`; examples/chat.ts on `deno serve` and on `reactor serve
 * --module`; a module that takes `Deno.upgradeWebSocket` at load time.
 *
 * @module
 */

import assert from "node:assert/strict";
import { serve } from "../../mod.ts";
import { startCli, startDenoServe } from "../support/net.ts";
import app from "./hono_ws_app.ts";
import { HOST, type ServeFn, WAIT_MS, within, withServer } from "./suite.ts";
import { Client } from "./ws_suite.ts";

/** Opens a Deno WebSocket client on `url` (waits for its `open`). */
async function client(url: string): Promise<Client> {
  const c = new Client(url);
  await within(c.opened, WAIT_MS, "open");
  return c;
}

async function checkHono(port: number): Promise<void> {
  const res = await fetch(`http://${HOST}:${port}/`);
  assert.equal(await res.text(), "hello from hono");
  const c = await client(`ws://${HOST}:${port}/ws?name=ada`);
  assert.equal(await c.next(), "welcome ada");
  c.ws.send("hi");
  assert.equal(await c.next(), "echo: hi");
  c.ws.send("bye");
  const e = await within(c.closed, WAIT_MS, "close");
  assert.deepEqual([e.code, e.reason, e.wasClean], [4000, "bye ada", true]);
}

async function checkChat(port: number): Promise<void> {
  const a = await client(`ws://${HOST}:${port}/ws?name=ada`);
  assert.equal(await a.next(), "* ada joined (1 here)");
  const b = await client(`ws://${HOST}:${port}/ws?name=bob`);
  assert.equal(await a.next(), "* bob joined (2 here)");
  assert.equal(await b.next(), "* bob joined (2 here)");
  b.ws.send("hello, ada");
  assert.equal(await a.next(), "bob: hello, ada");
  assert.equal(await b.next(), "bob: hello, ada");
  b.ws.close();
  await b.closed;
  assert.equal(await a.next(), "* bob left");
  a.ws.close();
  await a.closed;
}

const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test({ name: "deno-serve: hono upgradeWebSocket app", ...opts }, async () => {
  await withServer(Deno.serve, app.fetch, ({ port }) => checkHono(port));
});

Deno.test({ name: "reactor: hono upgradeWebSocket app", ...opts }, async () => {
  await withServer(serve as unknown as ServeFn, app.fetch, ({ port }) => checkHono(port));
});

async function withCli(args: string[], fn: (port: number) => Promise<void>): Promise<void> {
  const { cli, port } = await startCli(args);
  try {
    await fn(port);
  } finally {
    cli.kill("SIGTERM");
    assert.equal(await cli.exit(), 0, cli.stderr);
  }
}

Deno.test({ name: "reactor serve --module: hono upgradeWebSocket app", ...opts }, async () => {
  await withCli(["--module", "tests/apps/hono_ws_app.ts"], checkHono);
});

Deno.test({ name: "deno serve: examples/chat.ts", ...opts }, async () => {
  const { cli, port } = await startDenoServe("examples/chat.ts", HOST);
  try {
    await checkChat(port);
  } finally {
    cli.kill("SIGTERM");
    await cli.exit();
  }
});

Deno.test({ name: "reactor serve --module: examples/chat.ts", ...opts }, async () => {
  await withCli(["--module", "examples/chat.ts"], checkChat);
});

Deno.test({
  name: "reactor serve --module: a module that took Deno.upgradeWebSocket at load time",
  ...opts,
}, async () => {
  await withCli(["--module", "tests/apps/fixtures/ws_captured.ts"], async (port) => {
    const c = await client(`ws://${HOST}:${port}/`);
    c.ws.send("hi");
    assert.equal(await c.next(), "captured: hi");
    c.ws.close();
    await c.closed;
  });
});
