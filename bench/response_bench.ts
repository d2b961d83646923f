/**
 * Micro-benchmark of `writeResponse` (handlers/protocols/http/response.ts):
 * ns per response for a "Hello, World!" Response on the fast path (Deno's
 * internal slots) against the public-API path, beside the cost of
 * `new Response("Hello, World!")` itself. Every iteration makes a fresh
 * Response (a Response is single-use), so the writeResponse share is the
 * difference to the "new Response only" line.
 *
 * Two sinks: a stub connection whose `write` only counts bytes (the cost of
 * writeResponse alone), and a real Connection on a loopback TCP pair whose
 * peer is drained every 32 responses (adds the send(2) through FFI).
 *
 * Run: deno bench -A bench/response_bench.ts
 *
 * @module
 */
import { Reactor } from "../reactor/reactor.ts";
import { Connection } from "../handlers/connection.ts";
import { ConnectionContext } from "../handlers/context.ts";
import {
  responseCounters,
  type ResponseTarget,
  useResponseInternals,
  writeResponse,
} from "../handlers/protocols/http/response.ts";
import { SOCK_CLOEXEC, SOCK_NONBLOCK } from "../syscalls/constants.ts";
import { accept4, close, recv } from "../syscalls/libc.ts";
import { connectTcp, listenTcp, localAddress } from "../syscalls/socket.ts";

const HELLO = "Hello, World!";
const target: ResponseTarget = {
  head: false,
  http10: false,
  keepAlive: true,
  date: new Date().toUTCString(),
};
const headTarget: ResponseTarget = { ...target, head: true };
const BYTES = new TextEncoder().encode(HELLO);
const LONG = "x".repeat(16 << 10);

/** What writeResponse needs of a Connection for a static body: write() (counted, dropped). */
class StubConnection {
  bytes = 0;
  closed = false;
  outputFull = false;
  reactor = { asyncStarted() {}, asyncSettled() {} };
  write(data: Uint8Array, start = 0, end = data.length): boolean {
    this.bytes += end - start;
    return true;
  }
  whenWritable(): Promise<void> {
    return Promise.resolve();
  }
  closeAfterFlush(): void {}
  abort(): void {}
}
const stub = new StubConnection();
const conn = stub as unknown as Connection;

// A real connection: ours on a reactor context (not running: write() sends
// straight away), the peer drained by hand.
const reactor = await Reactor.create();
const ctx = new ConnectionContext(reactor, { timeouts: null });
const listener = listenTcp({ host: "127.0.0.1", port: 0 });
const { fd: peer } = connectTcp("127.0.0.1", localAddress(listener).port);
let ours = -1;
for (let i = 0; i < 1000 && ours < 0; i++) {
  ours = accept4(listener, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (ours < 0) await new Promise((r) => setTimeout(r, 1));
}
if (ours < 0) throw new Error("no loopback connection");
close(listener);
const socketConn = new Connection(ctx, ours, { data() {} });
socketConn.open(null);
const drainBuf = new Uint8Array(1 << 20);
let sent = 0;
function drain(): void {
  while (recv(peer, drainBuf, drainBuf.length, 0) > 0) { /* discard */ }
  if (socketConn.output.length > 0) socketConn.flush();
}

let made = 0;

Deno.bench('new Response("Hello, World!") only (reference)', {
  group: "hello",
  baseline: true,
}, () => {
  const res = new Response(HELLO);
  if (res.status !== 200) throw new Error();
  made++;
});

Deno.bench("new Response + writeResponse, fast path (stub connection)", { group: "hello" }, () => {
  writeResponse(conn, new Response(HELLO), target);
});

Deno.bench(
  "new Response + writeResponse, public-API path (stub connection; async body read)",
  { group: "hello" },
  async () => {
    useResponseInternals(false);
    try {
      await writeResponse(conn, new Response(HELLO), target);
    } finally {
      useResponseInternals(true);
    }
  },
);

Deno.bench("new Response + writeResponse, fast path, to a loopback socket (send)", {
  group: "hello",
}, () => {
  writeResponse(socketConn, new Response(HELLO), target);
  if (++sent % 32 === 0) drain();
});

Deno.bench("new Response(Uint8Array) only (reference)", { group: "kinds", baseline: true }, () => {
  const res = new Response(BYTES);
  if (res.status !== 200) throw new Error();
});

Deno.bench("new Response(Uint8Array) + writeResponse (stub)", { group: "kinds" }, () => {
  writeResponse(conn, new Response(BYTES), target);
});

Deno.bench("Response.json({...}) only (reference)", { group: "kinds" }, () => {
  const res = Response.json({ message: HELLO });
  if (res.status !== 200) throw new Error();
});

Deno.bench("Response.json({...}) + writeResponse (stub)", { group: "kinds" }, () => {
  writeResponse(conn, Response.json({ message: HELLO }), target);
});

Deno.bench("new Response(string, 201 + 3 headers) + writeResponse (stub)", {
  group: "kinds",
}, () => {
  writeResponse(
    conn,
    new Response(HELLO, {
      status: 201,
      headers: { "x-a": "1", "cache-control": "no-store", "set-cookie": "s=1" },
    }),
    target,
  );
});

Deno.bench("new Response(string, 201 + 3 headers) only (reference)", { group: "kinds" }, () => {
  const res = new Response(HELLO, {
    status: 201,
    headers: { "x-a": "1", "cache-control": "no-store", "set-cookie": "s=1" },
  });
  if (res.status !== 201) throw new Error();
});

Deno.bench("new Response(string) + writeResponse, HEAD (stub)", { group: "kinds" }, () => {
  writeResponse(conn, new Response(HELLO), headTarget);
});

Deno.bench("new Response(non-ASCII string) + writeResponse (stub)", { group: "kinds" }, () => {
  writeResponse(conn, new Response("Hell\u00f6, W\u00f6rld!"), target);
});

Deno.bench("new Response(16 KiB ASCII string) + writeResponse (stub)", { group: "kinds" }, () => {
  writeResponse(conn, new Response(LONG), target);
});

globalThis.addEventListener("unload", () => {
  // Keeps the work observable; reports which paths ran.
  if (stub.bytes === 0 || made === 0) console.error("nothing was written");
  console.error(
    `paths: internal ${responseCounters.internal}, public ${responseCounters.publicApi}, ` +
      `sync ${responseCounters.sync}, async ${responseCounters.async}`,
  );
  socketConn.close();
  close(peer);
});
