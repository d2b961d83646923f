/**
 * The WebSocket suite of a `Deno.serve`-shaped function with
 * `Deno.upgradeWebSocket`, `Deno.serve` itself the oracle:
 * `defineWebSocketSuite(name, serve)` registers the same cases for any
 * implementation; every expectation holds for Deno.serve (Deno 2.9.6). The
 * clients are Deno's own `WebSocket` and `npm:ws` (test-only dependency).
 *
 * The oracle's rules, as measured on Deno 2.9.6:
 *
 * - A server socket's `binaryType` is "arraybuffer"; `readyState` is 0 in the
 *   handler (and `send` then throws `InvalidStateError`), 1 in `onopen`, 2
 *   after `close()`, 3 in `onclose`.
 * - A close frame from the client is answered with the same code; the
 *   server's `close` event has the client's code and reason, `wasClean`.
 * - `socket.close(code, reason)` reaches the client's `close` event as is.
 * - A ping from the client is answered with a pong of the same payload.
 * - A Blob sent before a string arrives before it.
 *
 * @module
 */

import assert from "node:assert/strict";
import WS from "ws";
import { until } from "../support/net.ts";
import {
  HOST,
  type ServeFn,
  type ServeHandler,
  sha256,
  WAIT_MS,
  within,
  withServer,
} from "./suite.ts";

/** A Deno WebSocket client with its messages queued (binary as ArrayBuffers). */
export class Client {
  /** The socket. */
  readonly ws: WebSocket;
  readonly #queue: MessageEvent[] = [];
  readonly #waiters: ((e: MessageEvent) => void)[] = [];
  /** Resolves at `open`; rejects at an `error` before it. */
  readonly opened: Promise<void>;
  /** Resolves with the `close` event. */
  readonly closed: Promise<CloseEvent>;

  /**
   * @param url the ws: URL
   * @param protocols subprotocols to offer
   */
  constructor(url: string, protocols?: string[]) {
    this.ws = new WebSocket(url, protocols);
    this.ws.binaryType = "arraybuffer";
    this.ws.onmessage = (e) => {
      const w = this.#waiters.shift();
      if (w) w(e);
      else this.#queue.push(e);
    };
    this.opened = new Promise((resolve, reject) => {
      this.ws.onopen = () => resolve();
      this.ws.onerror = (e) => reject(new Error(`client error: ${(e as ErrorEvent).message}`));
    });
    this.closed = new Promise((resolve) => this.ws.addEventListener("close", (e) => resolve(e)));
  }

  /** The next message's data. */
  next(): Promise<unknown> {
    const e = this.#queue.shift();
    if (e) return Promise.resolve(e.data);
    return within(
      new Promise<MessageEvent>((resolve) => this.#waiters.push(resolve)).then((m) => m.data),
      WAIT_MS,
      "a message",
    );
  }
}

/** Runs `fn` with the ws: URL of a server of `handler` (suite.ts's `withServer`: one per case). */
function withWsServer(
  serve: ServeFn,
  handler: ServeHandler,
  fn: (url: string) => Promise<void>,
): Promise<void> {
  return withServer(serve, handler, ({ port }) => fn(`ws://${HOST}:${port}`));
}

/** An echo handler that records what its sockets see. */
function echo(log: string[] = []): ServeHandler {
  return (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req, {
      protocol: req.headers.get("sec-websocket-protocol")?.includes("chat") ? "chat" : undefined,
    });
    socket.onopen = () => log.push(`open ${socket.readyState}`);
    socket.onmessage = (e) => {
      if (e.data === "close-me") socket.close(4002, "as asked");
      else socket.send(e.data);
    };
    socket.onclose = (e) => log.push(`close ${e.code} ${e.reason} ${e.wasClean}`);
    return response;
  };
}

/** Registers every case, each test named `${name}: websocket: ...`, against `serve`. */
export function defineWebSocketSuite(name: string, serve: ServeFn): void {
  const test = (title: string, fn: () => Promise<void>) =>
    Deno.test({
      name: `${name}: websocket: ${title}`,
      fn,
      sanitizeResources: false,
      sanitizeOps: false,
    });

  test("echo of text and binary, in order; the server's binary is an ArrayBuffer", async () => {
    const kinds: string[] = [];
    await withWsServer(serve, (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => {
        kinds.push(e.data instanceof ArrayBuffer ? "arraybuffer" : typeof e.data);
        socket.send(e.data);
      };
      return response;
    }, async (url) => {
      const c = new Client(url);
      await c.opened;
      c.ws.send("héllo ✓");
      c.ws.send(new Uint8Array([1, 2, 3]));
      c.ws.send("");
      c.ws.send(new Uint8Array(0));
      assert.equal(await c.next(), "héllo ✓");
      assert.deepEqual(Array.from(new Uint8Array(await c.next() as ArrayBuffer)), [1, 2, 3]);
      assert.equal(await c.next(), "");
      assert.equal((await c.next() as ArrayBuffer).byteLength, 0);
      assert.deepEqual(kinds, ["string", "arraybuffer", "string", "arraybuffer"]);
      c.ws.close();
      await c.closed;
    });
  });

  test("readyState, send while connecting, binaryType, bufferedAmount", async () => {
    const seen: unknown[] = [];
    await withWsServer(serve, (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      seen.push(socket.readyState, socket.binaryType, socket.bufferedAmount);
      seen.push(socket instanceof WebSocket, socket instanceof EventTarget);
      try {
        socket.send("too early");
        seen.push("sent");
      } catch (e) {
        seen.push((e as DOMException).name);
      }
      socket.onopen = () => {
        seen.push(`open ${socket.readyState}`);
        socket.send("hi");
        socket.close(1000, "done");
        seen.push(`after close ${socket.readyState}`);
        socket.send("ignored"); // closing: dropped, no throw
      };
      socket.onclose = () => seen.push(`onclose ${socket.readyState}`);
      return response;
    }, async (url) => {
      const c = new Client(url);
      assert.equal(await c.next(), "hi");
      const e = await c.closed;
      assert.deepEqual([e.code, e.reason], [1000, "done"]);
      await until(() => seen.length >= 9, "onclose", WAIT_MS);
      assert.deepEqual(seen, [
        0,
        "arraybuffer",
        0,
        true,
        true,
        "InvalidStateError",
        "open 1",
        "after close 2",
        "onclose 3",
      ]);
    });
  });

  test("on* handlers and addEventListener: order, this, target", async () => {
    const seen: string[] = [];
    await withWsServer(serve, (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      const path = new URL(req.url).pathname;
      const on = function (this: unknown, e: Event) {
        seen.push(`on ${this === socket} ${e.target === socket}`);
      };
      const listener = (e: Event) => seen.push(`listener ${e.target === socket}`);
      if (path === "/on-first") {
        socket.onmessage = on;
        socket.addEventListener("message", listener);
      } else if (path === "/listener-first") {
        socket.addEventListener("message", listener);
        socket.onmessage = on;
      } else {
        socket.onmessage = on; // alone
      }
      socket.addEventListener("close", () => seen.push("close listener"));
      return response;
    }, async (url) => {
      for (const path of ["/on-first", "/listener-first", "/alone"]) {
        const c = new Client(url + path);
        await c.opened;
        c.ws.send("x");
        c.ws.close();
        await c.closed;
        await until(() => seen.includes("close listener"), "server close", WAIT_MS);
        seen.push("|");
        seen.splice(seen.indexOf("close listener"), 1);
      }
      assert.deepEqual(seen, [
        "on true true",
        "listener true",
        "|",
        "listener true",
        "on true true",
        "|",
        "on true true",
        "|",
      ]);
    });
  });

  test("the server closes with a code and reason: the client sees them", async () => {
    const log: string[] = [];
    await withWsServer(serve, echo(log), async (url) => {
      const c = new Client(url);
      await c.opened;
      c.ws.send("close-me");
      const e = await c.closed;
      assert.deepEqual([e.code, e.reason, e.wasClean], [4002, "as asked", true]);
      await until(() => log.length >= 2, "server close", WAIT_MS);
      assert.equal(log[1], "close 4002 as asked true");
    });
  });

  test("the client closes with a code and reason: the server sees them", async () => {
    const log: string[] = [];
    await withWsServer(serve, echo(log), async (url) => {
      const c = new Client(url);
      await c.opened;
      c.ws.close(4444, "client bye");
      const e = await c.closed;
      assert.deepEqual([e.code, e.wasClean], [4444, true]);
      await until(() => log.length >= 2, "server close", WAIT_MS);
      assert.deepEqual(log, ["open 1", "close 4444 client bye true"]);
    });
  });

  test("subprotocol: the one the server picks is the client's protocol", async () => {
    await withWsServer(serve, echo(), async (url) => {
      const c = new Client(url, ["superchat", "chat"]);
      await c.opened;
      assert.equal(c.ws.protocol, "chat");
      c.ws.close();
      await c.closed;
    });
  });

  test("a 16 MiB message both ways, byte-exact", async () => {
    await withWsServer(serve, echo(), async (url) => {
      const c = new Client(url);
      await c.opened;
      const big = new Uint8Array(16 << 20);
      for (let i = 0; i < big.length; i += 4096) big[i] = (i >> 12) & 0xff;
      big[big.length - 1] = 7;
      const t = performance.now();
      c.ws.send(big);
      const back = new Uint8Array(await c.next() as ArrayBuffer);
      console.log(`16 MiB echoed in ${(performance.now() - t).toFixed(0)} ms`);
      assert.equal(back.length, big.length);
      assert.equal(await sha256(back), await sha256(big));
      const text = "ü".repeat(4 << 20); // 8 MiB of UTF-8
      c.ws.send(text);
      assert.equal(await c.next(), text);
      c.ws.close();
      await c.closed;
    });
  });

  test("a Blob sent before a string arrives first", async () => {
    await withWsServer(serve, (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onopen = () => {
        socket.send(new Blob([new Uint8Array([5, 6, 7])]));
        socket.send("after the blob");
      };
      return response;
    }, async (url) => {
      const c = new Client(url);
      assert.deepEqual(Array.from(new Uint8Array(await c.next() as ArrayBuffer)), [5, 6, 7]);
      assert.equal(await c.next(), "after the blob");
      c.ws.close();
      await c.closed;
    });
  });

  test("npm:ws client: ping and pong, fragments, close code", async () => {
    const log: string[] = [];
    await withWsServer(serve, echo(log), async (url) => {
      const ws = new WS(url);
      const messages: string[] = [];
      const pongs: string[] = [];
      ws.on("message", (data: Uint8Array, binary: boolean) => {
        messages.push(`${binary ? "bin" : "text"} ${new TextDecoder().decode(data)}`);
      });
      ws.on("pong", (data: Uint8Array) => pongs.push(new TextDecoder().decode(data)));
      await within(new Promise((r) => ws.once("open", r)), WAIT_MS, "open");
      ws.ping("are you there");
      ws.send("frag", { fin: false });
      ws.send("ment", { fin: true });
      ws.send(new Uint8Array([0x41, 0x42]), { binary: true });
      await until(() => messages.length >= 2 && pongs.length >= 1, "echoes and pong", WAIT_MS);
      assert.deepEqual(pongs, ["are you there"]);
      assert.deepEqual(messages, ["text fragment", "bin AB"]);
      const closed = new Promise<[number, string]>((r) =>
        ws.once(
          "close",
          (code: number, reason: Uint8Array) => r([code, new TextDecoder().decode(reason)]),
        )
      );
      ws.close(4100, "ws says bye");
      assert.deepEqual(await within(closed, WAIT_MS, "close"), [4100, "ws says bye"]);
      await until(() => log.length >= 2, "server close", WAIT_MS);
      assert.equal(log[1], "close 4100 ws says bye true");
    });
  });

  test("many concurrent sockets, each echoed its own message", async () => {
    const n = 1000;
    let open = 0;
    await withWsServer(serve, (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onopen = () => open++;
      socket.onmessage = (e) => socket.send(`echo ${e.data}`);
      return response;
    }, async (url) => {
      const t = performance.now();
      const clients: Client[] = [];
      for (let i = 0; i < n; i += 100) {
        const batch = Array.from({ length: 100 }, () => new Client(url));
        await Promise.all(batch.map((c) => c.opened));
        clients.push(...batch);
      }
      await until(() => open === n, `${n} open sockets on the server`, WAIT_MS);
      clients.forEach((c, i) => c.ws.send(`${i}`));
      const answers = await Promise.all(clients.map((c) => c.next()));
      answers.forEach((a, i) => assert.equal(a, `echo ${i}`));
      console.log(`${n} sockets opened and echoed in ${(performance.now() - t).toFixed(0)} ms`);
      for (const c of clients) c.ws.close();
      await Promise.all(clients.map((c) => c.closed));
    });
  });
}
