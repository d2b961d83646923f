/**
 * The behavioural suite of a `Deno.serve`-shaped function, with `Deno.serve`
 * itself as the oracle: `defineAppSuite(name, serve)` registers the same cases
 * for any implementation, and every expectation here holds for `Deno.serve`
 * (Deno 2.9.6). Each case starts its own server on 127.0.0.1 port 0, talks to
 * it over real sockets (raw bytes through `Deno.connect` where the wire
 * matters, `fetch()` where it does not), and shuts it down: `shutdown()` must
 * resolve and `finished` must settle.
 *
 * Wire details that legitimately differ between servers are not asserted:
 * header order and name case, the `date` value, a `server` header, the reason
 * phrase, and how a body of known length is framed (only a stream on HTTP/1.1
 * must be chunked, and nothing may be chunked to an HTTP/1.0 client).
 *
 * The oracle's rules, as measured on Deno.serve 2.9.6 (each one is also
 * written beside the case that relies on it):
 *
 * - `request.url` takes its authority from the `Host` header (`Host: h` gives
 *   `http://h/...`); without a Host header (HTTP/1.0) it is
 *   `http://localhost:PORT/...`, not the listening address.
 * - `request.body` is `null` exactly when the method is GET or HEAD (the
 *   `Request` constructor forbids a body there); bytes sent with a GET
 *   (`Content-Length: 3`) are read off the wire and dropped, and the next
 *   request on the connection is parsed right. Any other method gets a
 *   non-null stream, even with `Content-Length: 0` or no framing header.
 * - Repeated request headers are joined with ", "; `set-cookie` in a response
 *   goes out as one line per cookie.
 * - `statusText` of a Response is ignored on the wire (hyper writes the
 *   canonical reason phrase).
 * - A string, Uint8Array or URLSearchParams body goes out with
 *   `content-length`; a Blob or FormData body goes out chunked; `null` goes
 *   out as `content-length: 0`; 204 gets neither header.
 * - HEAD on a GET handler: the handler sees `HEAD`; the answer has the GET's
 *   headers (a string body's `content-length` included) and no body; for a
 *   stream body it has neither `content-length` nor `transfer-encoding`.
 * - An HTTP/1.0 request is answered `HTTP/1.0 ...`: a fixed body with
 *   content-length, a stream close-delimited, and the connection closes.
 * - Pipelined requests are handled one after another: the handler for the
 *   second starts only once the first answer has been written.
 * - `request.signal` aborts when the client disconnects after the whole
 *   request has arrived, while the handler runs (the signal is made lazily:
 *   first read after the disconnect, it aborts a tick later). When the client
 *   leaves mid-body, a body read rejects (`BadResource`) but the signal does
 *   NOT abort (not within 1 s; measured). It ALSO aborts after a successful
 *   response ("legacy behaviour", with a one-time warning on stderr unless
 *   `--unstable-no-legacy-abort`), so no case asserts that it stays
 *   unaborted.
 * - `info.completed` resolves once the response is written, and (contrary to
 *   the doc comment in lib.deno.d.ts, which says it rejects with
 *   `Interrupted`) it also RESOLVES when the client disconnects before the
 *   body was delivered. No case asserts either way for a disconnect.
 * - A client disconnect during a streamed response cancels the stream
 *   (`cancel(reason)` runs at once, reason "resource closed").
 * - A handler that throws, rejects or returns a non-Response (TypeError
 *   "Return value from serve handler must be a response or a promise
 *   resolving to a response") goes to `onError`; the default logs the error
 *   to stderr through Deno's internal console (stubbing `console.error` does
 *   not capture it) and answers 500 `Internal Server Error`, without a
 *   content-type, keeping the connection open.
 * - `onListen` runs synchronously inside `serve()`, before it returns.
 * - `shutdown()` closes idle keep-alive connections at once, lets an
 *   in-flight request finish, then resolves; `finished` resolves with it.
 *   The `signal` option does the same as `shutdown()`.
 * - A streamed response is pulled as the client reads: a reader paused at
 *   16 MiB of a 64 MiB stream leaves the producer about 4.5 MiB ahead.
 * - `Deno.serve({ fetch })` throws ("handler must be a function"); the
 *   `{ fetch }` object is what `deno serve` loads from a module's default
 *   export (see hono_test.ts).
 *
 * @module
 */

import assert from "node:assert/strict";
import { concat } from "../support/net.ts";

// ---------------------------------------------------------------------------
// The shape under test: the TCP part of Deno.serve.

/** What the handler gets beside the request. */
export interface ServeHandlerInfo {
  /** The peer's address (transport "tcp"). */
  readonly remoteAddr: Deno.NetAddr;
  /** Settles once the response has been written. */
  readonly completed: Promise<void>;
}

/** A request handler, as for `Deno.serve`. */
export type ServeHandler = (
  request: Request,
  info: ServeHandlerInfo,
) => Response | Promise<Response>;

/** The options this suite uses, as for `Deno.serve`. */
export interface ServeOptions {
  /** Port to listen on; 0 picks a free one. */
  port?: number;
  /** Address to listen on. */
  hostname?: string;
  /** Aborting it stops the server, like `shutdown()`. */
  signal?: AbortSignal;
  /** Called with the bound address. */
  onListen?: (localAddr: Deno.NetAddr) => void;
  /** Decides the response when the handler throws or rejects. */
  onError?: (error: unknown) => Response | Promise<Response>;
}

/** What serve returns, as `Deno.HttpServer`. */
export interface ServeServer {
  /** The bound address. */
  readonly addr: Deno.NetAddr;
  /** Settles once the server has stopped. */
  readonly finished: Promise<void>;
  /** Stop accepting, finish what is in flight, close. */
  shutdown(): Promise<void>;
}

/** A `Deno.serve`-shaped function (its TCP overloads); `Deno.serve` is one. */
export interface ServeFn {
  (handler: ServeHandler): ServeServer;
  (options: ServeOptions, handler: ServeHandler): ServeServer;
  (options: ServeOptions & { handler: ServeHandler }): ServeServer;
}

// ---------------------------------------------------------------------------
// Small helpers.

/** The address every case listens on. */
export const HOST = "127.0.0.1";
/** The bound on any single wait (a read, a fetch, a shutdown). */
export const WAIT_MS = 10_000;

const enc = new TextEncoder();
const dec = new TextDecoder();
const latin1 = new TextDecoder("latin1");

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `p`, or a rejection naming `what` after `ms` (the timer is always cleared). */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether `p` settles within `ms`. */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settled = await Promise.race([
    p.then(() => true, () => true),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    }),
  ]);
  clearTimeout(timer);
  return settled;
}

/** Resolves true when `signal` aborts, false after `ms` (no timer left behind). */
export function abortedWithin(signal: AbortSignal, ms: number): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(false);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(true);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Hex SHA-256 of `data`. */
export async function sha256(data: Uint8Array | ArrayBuffer): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data as BufferSource);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Byte `i` of the test pattern: depends on every bit of `i` up to 2^24. */
export function patternByte(i: number): number {
  return (i + (i >>> 8) * 7 + (i >>> 16) * 13) & 0xff;
}

/** `length` bytes of the pattern starting at `offset`. */
export function pattern(offset: number, length: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(length);
  for (let k = 0; k < length; k++) out[k] = patternByte(offset + k);
  return out;
}

function crlfAt(buf: Uint8Array): number {
  for (let i = 0; i + 1 < buf.length; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10) return i;
  }
  return -1;
}

// ---------------------------------------------------------------------------
// A raw HTTP/1.x client: bytes out, responses parsed off the wire.

/** How a response body was delimited on the wire. */
export type Framing = "none" | "length" | "chunked" | "close";

/** A status line and header section, as received. */
export class RawHead {
  constructor(
    /** "HTTP/1.1" or "HTTP/1.0". */
    readonly version: string,
    /** The status code. */
    readonly status: number,
    /** The reason phrase (not asserted: servers differ). */
    readonly reason: string,
    /** Header lines in wire order, names lower-cased, values trimmed. */
    readonly headers: [string, string][],
  ) {}

  /** Every value of header `name`, one per line. */
  all(name: string): string[] {
    const n = name.toLowerCase();
    return this.headers.filter(([k]) => k === n).map(([, v]) => v);
  }

  /** The values of `name` joined with ", " (as Headers.get), or null. */
  get(name: string): string | null {
    const values = this.all(name);
    return values.length ? values.join(", ") : null;
  }

  /** The header lines but `date`, as sorted "name: value" strings. */
  comparable(): string[] {
    return this.headers.filter(([k]) => k !== "date").map(([k, v]) => `${k}: ${v}`).sort();
  }
}

/** A whole response: head, body and how the body was framed. */
export interface RawResponse {
  /** Status line and headers. */
  head: RawHead;
  /** The body bytes (empty when `onData` took them). */
  body: Uint8Array<ArrayBuffer>;
  /** The body as UTF-8. */
  text: string;
  /** How the body was delimited. */
  framing: Framing;
  /** Number of HTTP chunks (chunked framing only). */
  chunks: number;
}

/** Options of `RawConn.readResponse`. */
export interface ReadOptions {
  /** The request's method: HEAD answers have no body. */
  method?: string;
  /** Takes body bytes as they arrive (then `body` stays empty). */
  onData?: (bytes: Uint8Array) => void | Promise<void>;
}

/** A TCP connection that writes raw bytes and parses HTTP/1.x answers. */
export class RawConn {
  #pending: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  readonly #readBuf: Uint8Array<ArrayBuffer>;
  #closed = false;

  private constructor(readonly conn: Deno.TcpConn, readSize: number) {
    this.#readBuf = new Uint8Array(readSize);
  }

  /** Connects to HOST:port; reads take at most `readSize` bytes at a time. */
  static async open(port: number, readSize = 65536): Promise<RawConn> {
    const conn = await within(Deno.connect({ hostname: HOST, port }), WAIT_MS, "connect");
    return new RawConn(conn, readSize);
  }

  /** Our own port, which the server sees as `remoteAddr.port`. */
  get localPort(): number {
    return this.conn.localAddr.port;
  }

  /** Writes all of `data` (a string is sent as UTF-8). */
  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? enc.encode(data) : data;
    let off = 0;
    while (off < bytes.length) {
      off += await within(this.conn.write(bytes.subarray(off)), WAIT_MS, "write");
    }
  }

  /** Reads more bytes into the pending buffer; false at EOF (or a reset). */
  async #more(what: string): Promise<boolean> {
    let n: number | null;
    try {
      n = await within(this.conn.read(this.#readBuf), WAIT_MS, `read (${what})`);
    } catch (e) {
      if (e instanceof Deno.errors.ConnectionReset) return false;
      throw e;
    }
    if (n === null) return false;
    this.#pending = concat(this.#pending, this.#readBuf.subarray(0, n));
    return true;
  }

  /** One CRLF-terminated line, without the CRLF (latin1). */
  async readLine(what = "line"): Promise<string> {
    for (;;) {
      const at = crlfAt(this.#pending);
      if (at >= 0) {
        const line = latin1.decode(this.#pending.subarray(0, at));
        this.#pending = this.#pending.subarray(at + 2);
        return line;
      }
      if (!(await this.#more(what))) {
        throw new Error(`peer closed before the end of a ${what}`);
      }
    }
  }

  /** At least one and at most `max` bytes, or null at EOF. */
  async readSome(max: number, what = "data"): Promise<Uint8Array<ArrayBuffer> | null> {
    if (this.#pending.length === 0 && !(await this.#more(what))) return null;
    const take = Math.min(max, this.#pending.length);
    const out = this.#pending.slice(0, take);
    this.#pending = this.#pending.subarray(take);
    return out;
  }

  /** The status line and headers of the next response. */
  async readHead(): Promise<RawHead> {
    const line = await this.readLine("status line");
    const m = /^(HTTP\/\d\.\d) (\d{3})(?: (.*))?$/.exec(line);
    if (!m) throw new Error(`not a status line: ${JSON.stringify(line)}`);
    const headers: [string, string][] = [];
    for (;;) {
      const h = await this.readLine("header line");
      if (h === "") break;
      const colon = h.indexOf(":");
      if (colon <= 0) throw new Error(`not a header line: ${JSON.stringify(h)}`);
      headers.push([h.slice(0, colon).trim().toLowerCase(), h.slice(colon + 1).trim()]);
    }
    return new RawHead(m[1], Number(m[2]), m[3] ?? "", headers);
  }

  /** How the body after `head` is delimited (RFC 9112 section 6.3). */
  static framing(head: RawHead, method = "GET"): Framing {
    if (
      method === "HEAD" || head.status < 200 || head.status === 204 || head.status === 304
    ) return "none";
    const te = head.get("transfer-encoding");
    if (te !== null) {
      assert.match(te, /chunked$/i, "a transfer-encoding must end in chunked");
      return "chunked";
    }
    if (head.get("content-length") !== null) return "length";
    return "close";
  }

  /** Reads the body that follows `head`. */
  async readBody(
    head: RawHead,
    options: ReadOptions = {},
  ): Promise<{ body: Uint8Array<ArrayBuffer>; framing: Framing; chunks: number }> {
    const framing = RawConn.framing(head, options.method);
    const parts: Uint8Array[] = [];
    const deliver = async (bytes: Uint8Array) => {
      if (options.onData) await options.onData(bytes);
      else parts.push(bytes);
    };
    let chunks = 0;
    const readN = async (n: number, what: string) => {
      while (n > 0) {
        const piece = await this.readSome(n, what);
        if (piece === null) throw new Error(`peer closed with ${n} bytes of ${what} missing`);
        n -= piece.length;
        await deliver(piece);
      }
    };
    if (framing === "length") {
      const lengths = head.all("content-length");
      assert.equal(new Set(lengths).size, 1, `one content-length, got ${lengths}`);
      assert.match(lengths[0], /^\d+$/);
      await readN(Number(lengths[0]), "body");
    } else if (framing === "chunked") {
      for (;;) {
        const sizeLine = await this.readLine("chunk size");
        const hex = sizeLine.split(";")[0].trim();
        assert.match(hex, /^[0-9a-fA-F]+$/, `chunk size line ${JSON.stringify(sizeLine)}`);
        const size = parseInt(hex, 16);
        if (size === 0) {
          while ((await this.readLine("trailer")) !== "");
          break;
        }
        chunks++;
        await readN(size, "chunk data");
        assert.equal(await this.readLine("chunk end"), "", "a chunk ends with CRLF");
      }
    } else if (framing === "close") {
      for (;;) {
        const piece = await this.readSome(1 << 20, "close-delimited body");
        if (piece === null) break;
        await deliver(piece);
      }
    }
    return { body: concat(...parts), framing, chunks };
  }

  /** The next whole response. */
  async readResponse(options: ReadOptions = {}): Promise<RawResponse> {
    const head = await this.readHead();
    const { body, framing, chunks } = await this.readBody(head, options);
    return { head, body, text: dec.decode(body), framing, chunks };
  }

  /** Sends one request and reads its response. */
  async exchange(request: string | Uint8Array, options: ReadOptions = {}): Promise<RawResponse> {
    await this.send(request);
    return await this.readResponse(options);
  }

  /** Asserts the server closes (EOF or reset) with nothing more sent. */
  async expectClosed(): Promise<void> {
    assert.equal(this.#pending.length, 0, `unexpected bytes: ${latin1.decode(this.#pending)}`);
    const more = await this.#more("waiting for the server to close");
    assert.ok(!more, `expected the server to close, got ${latin1.decode(this.#pending)}`);
  }

  /** Closes the socket (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/** A request line and headers, CRLF-terminated, with `Host` first. */
export function req(method: string, path: string, port: number, extra: string[] = []): string {
  return [`${method} ${path} HTTP/1.1`, `Host: ${HOST}:${port}`, ...extra, "", ""].join("\r\n");
}

// ---------------------------------------------------------------------------
// One server per case.

/** What a case gets: the server, its port, a fetch and raw connections. */
export interface ServerCtx {
  /** The server under test. */
  readonly server: ServeServer;
  /** Its port. */
  readonly port: number;
  /** `http://127.0.0.1:PORT` + path. */
  url(path: string): string;
  /** fetch() on a client of its own (no pooled connections), bounded. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /** A raw connection, closed when the case ends. */
  connect(readSize?: number): Promise<RawConn>;
}

/**
 * Starts `handler` through `serve` on 127.0.0.1:0, runs `fn`, then closes
 * every client and asserts `shutdown()` resolves and `finished` settles.
 */
export async function withServer(
  serve: ServeFn,
  handler: ServeHandler,
  fn: (ctx: ServerCtx) => Promise<void>,
  options: ServeOptions = {},
): Promise<void> {
  const server = serve({ port: 0, hostname: HOST, onListen() {}, ...options }, handler);
  const port = server.addr.port;
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  const conns: RawConn[] = [];
  const url = (path: string) => `http://${HOST}:${port}${path}`;
  const ctx: ServerCtx = {
    server,
    port,
    url,
    fetch: (path, init) => within(fetch(url(path), { ...init, client }), WAIT_MS, `fetch ${path}`),
    async connect(readSize) {
      const conn = await RawConn.open(port, readSize);
      conns.push(conn);
      return conn;
    },
  };
  let failure: unknown = undefined;
  try {
    await fn(ctx);
  } catch (e) {
    failure = e;
  }
  for (const c of conns) c.close();
  client.close();
  try {
    await within(server.shutdown(), WAIT_MS, "shutdown()");
    await within(server.finished, WAIT_MS, "finished");
  } catch (e) {
    if (failure === undefined) failure = e;
  }
  if (failure !== undefined) throw failure;
}

/** A JSON body out of a Response, asserted 200 unless told otherwise. */
async function json(res: Response, status = 200): Promise<Record<string, unknown>> {
  const text = await res.text();
  assert.equal(res.status, status, text);
  return JSON.parse(text);
}

const FIXTURE = new URL("./fixtures/hello.txt", import.meta.url);

// ---------------------------------------------------------------------------
// The cases.

/** Registers every case, each test named `${name}: ...`, against `serve`. */
export function defineAppSuite(name: string, serve: ServeFn): void {
  const test = (title: string, fn: () => Promise<void>) => Deno.test(`${name}: ${title}`, fn);
  const run = (
    handler: ServeHandler,
    fn: (ctx: ServerCtx) => Promise<void>,
    options?: ServeOptions,
  ) => withServer(serve, handler, fn, options);

  // ----- request -----------------------------------------------------------

  test("request: method, absolute url with query, headers (repeats joined)", async () => {
    await run(
      (request) =>
        Response.json({
          method: request.method,
          url: request.url,
          multi: request.headers.get("x-multi"),
          mixed: request.headers.get("X-MIXED-case"),
          padded: request.headers.get("x-padded"),
          accept: request.headers.get("accept"),
          host: request.headers.get("host"),
        }),
      async ({ port, connect }) => {
        const conn = await connect();
        const r = await conn.exchange(req("PATCH", "/items/42?x=1&y=a%20b&x=2", port, [
          "X-Multi: one",
          "X-Mixed-Case: Value",
          "Accept: text/plain",
          "X-Multi: two",
          "X-Padded:    padded value   ",
          "Accept: application/json",
          "Content-Length: 0",
        ]));
        assert.equal(r.head.status, 200, r.text);
        assert.deepEqual(JSON.parse(r.text), {
          method: "PATCH",
          // The authority comes from the Host header (Deno.serve: `Host: h` gives http://h/).
          url: `http://${HOST}:${port}/items/42?x=1&y=a%20b&x=2`,
          multi: "one, two",
          mixed: "Value",
          padded: "padded value",
          accept: "text/plain, application/json",
          host: `${HOST}:${port}`,
        });
      },
    );
  });

  test("request: body as text, json and arrayBuffer", async () => {
    const bytes = pattern(0, 100_000);
    await run(async (request) => {
      const path = new URL(request.url).pathname;
      if (path === "/text") return Response.json({ text: await request.text() });
      if (path === "/json") {
        const body = await request.json();
        return Response.json({ body, type: Array.isArray(body) ? "array" : typeof body });
      }
      const buf = await request.arrayBuffer();
      return Response.json({ length: buf.byteLength, sha: await sha256(buf) });
    }, async ({ fetch }) => {
      const text = "héllo wörld ✓ \u{1F600}";
      assert.deepEqual(await json(await fetch("/text", { method: "POST", body: text })), { text });
      const obj = { a: 1, b: [true, null, "x"], c: { d: "é" } };
      assert.deepEqual(
        await json(await fetch("/json", { method: "PUT", body: JSON.stringify(obj) })),
        { body: obj, type: "object" },
      );
      assert.deepEqual(
        await json(await fetch("/bytes", { method: "POST", body: bytes })),
        { length: bytes.length, sha: await sha256(bytes) },
      );
    });
  });

  test("request: formData, urlencoded and multipart", async () => {
    await run(async (request) => {
      const form = await request.formData();
      const out: [string, unknown][] = [];
      for (const [k, v] of form) {
        out.push([
          k,
          typeof v === "string" ? v : { name: v.name, type: v.type, text: await v.text() },
        ]);
      }
      return Response.json({ contentType: request.headers.get("content-type"), out });
    }, async ({ fetch }) => {
      const urlencoded = await json(
        await fetch("/", {
          method: "POST",
          body: new URLSearchParams([["a", "1"], ["b", "x y&z"], ["a", "2"], ["é", "✓"]]),
        }),
      );
      assert.match(String(urlencoded.contentType), /^application\/x-www-form-urlencoded/);
      assert.deepEqual(urlencoded.out, [["a", "1"], ["b", "x y&z"], ["a", "2"], ["é", "✓"]]);

      const form = new FormData();
      form.append("field", "value ✓");
      form.append(
        "file",
        new File(["file body\r\n--not-a-boundary\r\n"], "f.txt", {
          type: "text/plain",
        }),
      );
      form.append("field", "second");
      const multipart = await json(await fetch("/", { method: "POST", body: form }));
      assert.match(String(multipart.contentType), /^multipart\/form-data; boundary=/);
      assert.deepEqual(multipart.out, [
        ["field", "value ✓"],
        ["file", { name: "f.txt", type: "text/plain", text: "file body\r\n--not-a-boundary\r\n" }],
        ["field", "second"],
      ]);
    });
  });

  test("request: body read incrementally as a stream, before the rest is sent", async () => {
    const first = pattern(0, 3000);
    const second = pattern(3000, 5000);
    const firstSeen = Promise.withResolvers<number>();
    await run(async (request) => {
      const reader = request.body!.getReader();
      let total = 0;
      let reads = 0;
      const parts: Uint8Array[] = [];
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        reads++;
        parts.push(value);
        total += value.length;
        // The client holds the second half back until we have seen the first.
        if (total >= first.length) firstSeen.resolve(total);
      }
      return Response.json({ total, reads, sha: await sha256(concat(...parts)) });
    }, async ({ port, connect }) => {
      const conn = await connect();
      await conn.send(req("POST", "/upload", port, [
        `Content-Length: ${first.length + second.length}`,
        "Content-Type: application/octet-stream",
      ]));
      await conn.send(first);
      assert.equal(await within(firstSeen.promise, WAIT_MS, "handler saw the first half"), 3000);
      await conn.send(second);
      const r = await conn.readResponse();
      assert.equal(r.head.status, 200, r.text);
      const got = JSON.parse(r.text);
      assert.equal(got.total, 8000);
      assert.ok(got.reads >= 2, `the body came in ${got.reads} reads`);
      assert.equal(got.sha, await sha256(concat(first, second)));
    });
  });

  test("request: a chunked body (extensions, trailer), then the next request", async () => {
    await run(async (request) => {
      const text = await request.text();
      return Response.json({ method: request.method, text });
    }, async ({ port, connect }) => {
      const conn = await connect();
      await conn.send(req("POST", "/chunked", port, ["Transfer-Encoding: chunked"]));
      await conn.send("7\r\nhello, \r\n");
      await sleep(20);
      await conn.send("8;name=value\r\nchunked \r\n");
      await sleep(20);
      await conn.send("A\r\nworld, yes\r\n0\r\nX-Trailer: t\r\n\r\n");
      const r = await conn.readResponse();
      assert.equal(r.head.status, 200, r.text);
      assert.deepEqual(JSON.parse(r.text), { method: "POST", text: "hello, chunked world, yes" });
      // The terminator was consumed: the connection carries on with a new request.
      const next = await conn.exchange(req("PUT", "/next", port, ["Content-Length: 2"]) + "ok");
      assert.deepEqual(JSON.parse(next.text), { method: "PUT", text: "ok" });
    });
  });

  test("request: empty bodies (GET null; POST empty stream; a GET's body skipped)", async () => {
    await run(async (request) => {
      const isNull = request.body === null;
      const text = await request.text();
      return Response.json({ method: request.method, isNull, text });
    }, async ({ port, connect }) => {
      const conn = await connect();
      const ask = async (raw: string) => JSON.parse((await conn.exchange(raw)).text);
      // Deno.serve: body is null exactly for GET and HEAD (the Request
      // constructor forbids a body there) ...
      assert.deepEqual(await ask(req("GET", "/", port)), {
        method: "GET",
        isNull: true,
        text: "",
      });
      // ... and a non-null, empty stream for other methods, with or without
      // Content-Length: 0.
      assert.deepEqual(await ask(req("POST", "/", port, ["Content-Length: 0"])), {
        method: "POST",
        isNull: false,
        text: "",
      });
      assert.deepEqual(await ask(req("DELETE", "/", port)), {
        method: "DELETE",
        isNull: false,
        text: "",
      });
      // Bytes sent with a GET are read off the wire and dropped: the handler
      // sees no body, and they are not taken for the next request.
      assert.deepEqual(await ask(req("GET", "/", port, ["Content-Length: 3"]) + "abc"), {
        method: "GET",
        isNull: true,
        text: "",
      });
      assert.deepEqual(await ask(req("POST", "/", port, ["Content-Length: 4"]) + "next"), {
        method: "POST",
        isNull: false,
        text: "next",
      });
    });
  });

  test("request: signal aborts when the client disconnects while the handler waits", async () => {
    const started = Promise.withResolvers<void>();
    const aborted = Promise.withResolvers<boolean>();
    await run(async (request) => {
      started.resolve();
      aborted.resolve(await abortedWithin(request.signal, 5000));
      return new Response("nobody reads this");
    }, async ({ port, connect }) => {
      const conn = await connect();
      await conn.send(req("GET", "/wait", port));
      await within(started.promise, WAIT_MS, "handler started");
      conn.close();
      assert.equal(await within(aborted.promise, WAIT_MS, "abort"), true, "signal aborted");
    });
  });

  test("request: a body read fails when the client leaves mid-body", async () => {
    const started = Promise.withResolvers<void>();
    const outcome = Promise.withResolvers<string>();
    await run(async (request) => {
      started.resolve();
      try {
        outcome.resolve(`read ${(await request.text()).length} bytes`);
      } catch {
        // Deno.serve: BadResource "Cannot read body as underlying resource unavailable".
        // Its request.signal does NOT abort in this case (only once the whole
        // request has arrived does a disconnect abort it), so it is not checked.
        outcome.resolve("rejected");
      }
      return new Response("nobody reads this");
    }, async ({ port, connect }) => {
      const conn = await connect();
      await conn.send(req("POST", "/upload", port, ["Content-Length: 100"]) + "only 13 bytes");
      await within(started.promise, WAIT_MS, "handler started");
      await sleep(20);
      conn.close();
      assert.equal(await within(outcome.promise, WAIT_MS, "handler outcome"), "rejected");
    });
  });

  test("request: info.remoteAddr is the client's tcp address", async () => {
    await run((_request, info) => Response.json(info.remoteAddr), async ({ port, connect }) => {
      const conn = await connect();
      const r = await conn.exchange(req("GET", "/", port));
      assert.deepEqual(JSON.parse(r.text), {
        transport: "tcp",
        hostname: HOST,
        port: conn.localPort,
      });
    });
  });

  test("request: info.completed resolves only after the response body is sent", async () => {
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    const completed: Promise<void>[] = [];
    await run((request, info) => {
      completed.push(info.completed);
      if (new URL(request.url).pathname === "/fixed") return new Response("fixed");
      return new Response(
        new ReadableStream<Uint8Array>({
          start(c) {
            controller = c;
            c.enqueue(enc.encode("first"));
          },
        }),
      );
    }, async ({ port, connect }) => {
      const conn = await connect();
      const fixed = await conn.exchange(req("GET", "/fixed", port));
      assert.equal(fixed.text, "fixed");
      await within(completed[0], WAIT_MS, "completed of a fixed response");

      await conn.send(req("GET", "/stream", port));
      const head = await conn.readHead();
      assert.equal(head.status, 200);
      const firstChunk = await conn.readLine("chunk size");
      assert.equal(parseInt(firstChunk, 16), 5);
      // The body is still open: completed must wait.
      assert.equal(await settlesWithin(completed[1], 100), false, "completed before the end");
      controller.enqueue(enc.encode("last"));
      controller.close();
      // Rest of the body: "first" CRLF, then whatever framing carries "last".
      assert.equal(await conn.readLine("chunk data"), "first");
      const rest = await conn.readBody(head);
      assert.equal(dec.decode(rest.body), "last");
      await within(completed[1], WAIT_MS, "completed of a streamed response");
    });
  });

  // ----- response ----------------------------------------------------------

  test("response: string, Uint8Array, Blob, URLSearchParams, null bodies on the wire", async () => {
    await run((request) => {
      switch (new URL(request.url).pathname) {
        case "/string":
          return new Response("héllo ✓");
        case "/bytes":
          return new Response(new Uint8Array([0, 1, 2, 253, 254, 255]));
        case "/blob":
          return new Response(new Blob(["blob ", "parts"], { type: "application/x-test" }));
        case "/params":
          return new Response(new URLSearchParams([["a", "1"], ["b", "x y"]]));
        default:
          return new Response(null);
      }
    }, async ({ port, connect }) => {
      // One keep-alive connection for all: a mis-framed body would break the next.
      const conn = await connect();
      const get = (path: string) => conn.exchange(req("GET", path, port));
      const checkLength = (r: RawResponse) => {
        assert.notEqual(r.framing, "close", "HTTP/1.1 keep-alive needs a delimited body");
        const cl = r.head.get("content-length");
        if (cl !== null) assert.equal(Number(cl), r.body.length);
      };

      // Deno.serve frames string/bytes/params with content-length, blob chunked, null as
      // content-length: 0; not asserted (checkLength only checks what is there).
      const s = await get("/string");
      assert.equal(s.head.status, 200);
      assert.equal(s.head.get("content-type"), "text/plain;charset=UTF-8");
      assert.equal(s.text, "héllo ✓");
      checkLength(s);

      const b = await get("/bytes");
      assert.equal(b.head.get("content-type"), null, "a Uint8Array body has no content-type");
      assert.deepEqual([...b.body], [0, 1, 2, 253, 254, 255]);
      checkLength(b);

      const blob = await get("/blob");
      assert.equal(blob.head.get("content-type"), "application/x-test");
      assert.equal(blob.text, "blob parts");
      checkLength(blob);

      const p = await get("/params");
      assert.equal(
        p.head.get("content-type"),
        "application/x-www-form-urlencoded;charset=UTF-8",
      );
      assert.equal(p.text, "a=1&b=x+y");
      checkLength(p);

      const n = await get("/null");
      assert.equal(n.head.status, 200);
      assert.equal(n.body.length, 0);
      assert.equal(n.head.get("content-type"), null);
      checkLength(n);
    });
  });

  test("response: FormData body parses back", async () => {
    await run(() => {
      const form = new FormData();
      form.append("name", "value ✓");
      form.append("upload", new File(["file contents"], "a.bin", { type: "application/x-a" }));
      return new Response(form);
    }, async ({ port, connect }) => {
      const conn = await connect();
      const r = await conn.exchange(req("GET", "/", port));
      const type = r.head.get("content-type")!;
      assert.match(type, /^multipart\/form-data; boundary=/);
      const form = await new Response(r.body, { headers: { "content-type": type } }).formData();
      assert.equal(form.get("name"), "value ✓");
      const file = form.get("upload") as File;
      assert.equal(file.name, "a.bin");
      assert.equal(file.type, "application/x-a");
      assert.equal(await file.text(), "file contents");
    });
  });

  test("response: a ReadableStream from a slow producer is chunked and streamed", async () => {
    const gate = Promise.withResolvers<void>();
    const pieces = Array.from({ length: 30 }, (_, i) => `piece ${i};`);
    await run(() =>
      new Response(
        new ReadableStream<Uint8Array>({
          async start(c) {
            c.enqueue(enc.encode(pieces[0]));
            // Held until the client has read the first piece off the wire:
            // a server that buffers the whole stream never gets past here.
            await gate.promise;
            for (const piece of pieces.slice(1)) {
              await sleep(3);
              c.enqueue(enc.encode(piece));
            }
            c.close();
          },
        }),
        { headers: { "content-type": "text/plain" } },
      ), async ({ port, connect }) => {
      const conn = await connect();
      await conn.send(req("GET", "/", port));
      const head = await conn.readHead();
      assert.equal(head.status, 200);
      assert.equal(head.get("transfer-encoding"), "chunked", "a stream is chunked on HTTP/1.1");
      assert.equal(head.get("content-length"), null);
      assert.equal(head.get("content-type"), "text/plain");
      let received = "";
      let gateOpened = false;
      const { chunks } = await conn.readBody(head, {
        onData(bytes) {
          received += dec.decode(bytes);
          if (!gateOpened && received.length >= pieces[0].length) {
            gateOpened = true;
            gate.resolve();
          }
        },
      });
      assert.equal(received, pieces.join(""));
      assert.ok(chunks >= 2, `${chunks} chunks`);
    });
  });

  test("response: the client leaving cancels a streamed body", async () => {
    const cancelled = Promise.withResolvers<void>();
    await run(() =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(c) {
            c.enqueue(enc.encode("the beginning"));
          },
          cancel() {
            cancelled.resolve();
          },
        }),
      ), async ({ port, connect }) => {
      const conn = await connect();
      await conn.send(req("GET", "/", port));
      assert.equal((await conn.readHead()).status, 200);
      conn.close();
      await within(cancelled.promise, WAIT_MS, "cancel() of the response stream");
    });
  });

  test("response: status codes 201/204/302/304/404/500, no body where none is allowed", async () => {
    await run((request) => {
      switch (new URL(request.url).pathname) {
        case "/201":
          return Response.json({ created: true }, { status: 201 });
        case "/204":
          return new Response(null, { status: 204 });
        case "/302":
          return Response.redirect(`http://${HOST}/elsewhere`, 302);
        case "/304":
          return new Response(null, { status: 304, headers: { etag: '"v1"' } });
        case "/404":
          return new Response("not found here", { status: 404 });
        default:
          return new Response("server said no", { status: 500 });
      }
    }, async ({ port, connect }) => {
      const conn = await connect();
      const get = (path: string) => conn.exchange(req("GET", path, port));

      const created = await get("/201");
      assert.equal(created.head.status, 201);
      assert.equal(created.head.get("content-type"), "application/json");
      assert.deepEqual(JSON.parse(created.text), { created: true });

      const noContent = await get("/204");
      assert.equal(noContent.head.status, 204);
      // RFC 9110/9112: MUST NOT send Content-Length or Transfer-Encoding in a 204.
      assert.equal(noContent.head.get("content-length"), null);
      assert.equal(noContent.head.get("transfer-encoding"), null);

      const found = await get("/302");
      assert.equal(found.head.status, 302);
      assert.equal(found.head.get("location"), `http://${HOST}/elsewhere`);

      const notModified = await get("/304");
      assert.equal(notModified.head.status, 304);
      assert.equal(notModified.head.get("etag"), '"v1"');
      assert.equal(notModified.head.get("transfer-encoding"), null);

      const notFound = await get("/404");
      assert.equal(notFound.head.status, 404);
      assert.equal(notFound.text, "not found here");

      const error = await get("/500");
      assert.equal(error.head.status, 500);
      assert.equal(error.text, "server said no");
    });
  });

  test("response: custom headers, repeated headers, one line per set-cookie", async () => {
    await run(() => {
      const headers = new Headers({ "x-custom": "v1", "cache-control": "no-store" });
      headers.append("set-cookie", "a=1; Path=/");
      headers.append("set-cookie", "b=2; HttpOnly; Expires=Wed, 21 Oct 2037 07:28:00 GMT");
      headers.append("x-list", "a");
      headers.append("x-list", "b");
      // Deno.serve ignores statusText on the wire (hyper writes "OK").
      return new Response("ok", { headers, statusText: "Fine" });
    }, async ({ port, connect, fetch }) => {
      const conn = await connect();
      const r = await conn.exchange(req("GET", "/", port));
      assert.equal(r.head.get("x-custom"), "v1");
      assert.equal(r.head.get("cache-control"), "no-store");
      assert.deepEqual(r.head.all("set-cookie"), [
        "a=1; Path=/",
        "b=2; HttpOnly; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
      ]);
      assert.equal(r.head.get("x-list"), "a, b");
      assert.equal(r.text, "ok");

      const res = await fetch("/");
      await res.text();
      assert.deepEqual(res.headers.getSetCookie(), [
        "a=1; Path=/",
        "b=2; HttpOnly; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
      ]);
    });
  });

  test("response: HEAD on a GET handler has the GET's headers and no body", async () => {
    const methods: string[] = [];
    await run((request) => {
      methods.push(request.method);
      return new Response("hello head", { headers: { "x-h": "1", "content-type": "text/x-h" } });
    }, async ({ port, connect }) => {
      const conn = await connect();
      const get = await conn.exchange(req("GET", "/", port));
      const head = await conn.exchange(req("HEAD", "/", port), { method: "HEAD" });
      // If HEAD had carried a body, this answer would not parse.
      const again = await conn.exchange(req("GET", "/", port));
      assert.deepEqual(methods, ["GET", "HEAD", "GET"]);
      assert.equal(get.text, "hello head");
      assert.equal(again.text, "hello head");
      assert.equal(head.head.status, 200);
      // Deno.serve keeps the content-length a GET would have (10) on HEAD.
      assert.deepEqual(head.head.comparable(), get.head.comparable());
    });
  });

  test("response: HTTP/1.0 requests get a content-length or close-delimited body", async () => {
    await run((request) => {
      if (new URL(request.url).pathname === "/fixed") return new Response("fixed body");
      return new Response(
        new ReadableStream<Uint8Array>({
          async start(c) {
            for (const s of ["stream ", "for ", "one-oh"]) {
              c.enqueue(enc.encode(s));
              await sleep(5);
            }
            c.close();
          },
        }),
      );
    }, async ({ port, connect }) => {
      // Deno.serve answers "HTTP/1.0 200 OK" (RFC 9110 prefers 1.1; either is fine).
      const fixed = await connect();
      const a = await fixed.exchange(`GET /fixed HTTP/1.0\r\nHost: ${HOST}:${port}\r\n\r\n`);
      assert.match(a.head.version, /^HTTP\/1\.[01]$/);
      assert.equal(a.head.status, 200);
      assert.notEqual(a.framing, "chunked", "no chunked to HTTP/1.0");
      assert.equal(a.text, "fixed body");
      if (a.framing === "length") await fixed.expectClosed();

      // No Host header either: Deno.serve then reports http://localhost:PORT/ as the url.
      const streamed = await connect();
      const b = await streamed.exchange("GET /stream HTTP/1.0\r\n\r\n");
      assert.equal(b.head.status, 200);
      assert.equal(b.head.get("transfer-encoding"), null, "no chunked to HTTP/1.0");
      assert.equal(b.text, "stream for one-oh");
      if (b.framing === "length") await streamed.expectClosed();
    });
  });

  test("response: keep-alive, two requests on one connection", async () => {
    await run((request, info) => {
      return Response.json({ path: new URL(request.url).pathname, port: info.remoteAddr.port });
    }, async ({ port, connect }) => {
      const conn = await connect();
      const one = await conn.exchange(req("GET", "/one", port));
      assert.notEqual(one.head.get("connection")?.toLowerCase(), "close");
      const two = await conn.exchange(req("GET", "/two", port));
      assert.deepEqual(JSON.parse(one.text), { path: "/one", port: conn.localPort });
      assert.deepEqual(JSON.parse(two.text), { path: "/two", port: conn.localPort });
    });
  });

  test("response: pipelining, 3 requests at once, the first slowest: answers in order", async () => {
    const started: string[] = [];
    await run(async (request) => {
      const path = new URL(request.url).pathname;
      started.push(path);
      if (path === "/slow") await sleep(300);
      const body = request.body ? await request.text() : "";
      return new Response(`${path}:${body}`);
    }, async ({ port, connect }) => {
      const conn = await connect();
      await conn.send(
        req("GET", "/slow", port) +
          req("POST", "/echo", port, ["Content-Length: 3"]) + "xyz" +
          req("GET", "/fast", port),
      );
      const answers = [];
      for (let i = 0; i < 3; i++) answers.push((await conn.readResponse()).text);
      assert.deepEqual(answers, ["/slow:", "/echo:xyz", "/fast:"]);
      // Deno.serve runs them one after another (started in order, each after
      // the previous answer); a server may overlap them, so only the set is checked.
      assert.deepEqual([...started].sort(), ["/echo", "/fast", "/slow"]);
    });
  });

  // ----- async handlers ------------------------------------------------------

  test("async: microtask, setTimeout, file read and fetch() to a second server", async () => {
    const fixture = await Deno.readTextFile(FIXTURE);
    const upstreamClient = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    try {
      await run(
        (request) => new Response(`up:${new URL(request.url).searchParams.get("n")}`),
        async (upstream) => {
          await run(async (request) => {
            const url = new URL(request.url);
            const n = url.searchParams.get("n");
            switch (url.pathname) {
              case "/micro": {
                await Promise.resolve();
                await new Promise<void>((resolve) => queueMicrotask(resolve));
                return new Response(`micro:${n}`);
              }
              case "/timer":
                await sleep(20 + Number(n) * 3);
                return new Response(`timer:${n}`);
              case "/file":
                return new Response(`${n}:${await Deno.readTextFile(FIXTURE)}`);
              default: {
                const res = await fetch(upstream.url(`/up?n=${n}`), { client: upstreamClient });
                return new Response(`fetch:${await res.text()}`);
              }
            }
          }, async ({ fetch }) => {
            const jobs = [];
            for (let n = 0; n < 5; n++) {
              for (const kind of ["micro", "timer", "file", "fetch"]) {
                const expected = {
                  micro: `micro:${n}`,
                  timer: `timer:${n}`,
                  file: `${n}:${fixture}`,
                  fetch: `fetch:up:${n}`,
                }[kind];
                jobs.push(
                  fetch(`/${kind}?n=${n}`).then(async (res) => {
                    assert.equal(res.status, 200);
                    assert.equal(await res.text(), expected);
                  }),
                );
              }
            }
            await Promise.all(jobs);
          });
        },
      );
    } finally {
      upstreamClient.close();
    }
  });

  // ----- errors --------------------------------------------------------------

  test("errors: a throwing handler gives 500 and the server serves on", async () => {
    await run((request) => {
      if (new URL(request.url).pathname === "/throw") {
        // Deno.serve's default onError prints this to stderr (expected noise).
        throw new Error("expected test error: thrown by the handler");
      }
      return new Response("still here");
    }, async ({ port, connect }) => {
      const conn = await connect();
      const r = await conn.exchange(req("GET", "/throw", port));
      assert.equal(r.head.status, 500);
      // Deno.serve's default onError answer, with no content-type.
      assert.equal(r.text, "Internal Server Error");
      // The same connection carries on.
      const ok = await conn.exchange(req("GET", "/ok", port));
      assert.equal(ok.head.status, 200);
      assert.equal(ok.text, "still here");
    });
  });

  test("errors: a rejected promise gives 500", async () => {
    await run(async (request) => {
      const path = new URL(request.url).pathname;
      if (path === "/reject") {
        return await Promise.reject(new Error("expected test error: rejected"));
      }
      if (path === "/late") {
        await sleep(10);
        throw new Error("expected test error: thrown after an await");
      }
      return new Response("fine");
    }, async ({ fetch }) => {
      for (const path of ["/reject", "/late"]) {
        const res = await fetch(path);
        assert.equal(res.status, 500);
        assert.equal(await res.text(), "Internal Server Error");
      }
      const ok = await fetch("/ok");
      assert.equal(await ok.text(), "fine");
    });
  });

  test("errors: onError gets the error and decides the response", async () => {
    const errors: unknown[] = [];
    const thrown = new Error("handled error");
    await run(async (request) => {
      const path = new URL(request.url).pathname;
      if (path === "/throw") throw thrown;
      if (path === "/reject") return await Promise.reject(new RangeError("rejected"));
      if (path === "/not-a-response") return undefined as unknown as Response;
      return new Response("fine");
    }, async ({ fetch }) => {
      const a = await fetch("/throw");
      assert.equal(a.status, 503);
      assert.equal(a.headers.get("x-handled"), "yes");
      assert.equal(await a.text(), "handled: handled error");
      assert.equal(errors[0], thrown, "onError gets the very error thrown");

      const b = await fetch("/reject");
      assert.equal(b.status, 503);
      assert.equal(await b.text(), "handled: rejected");
      assert.ok(errors[1] instanceof RangeError);

      // Deno.serve: TypeError "Return value from serve handler must be a
      // response or a promise resolving to a response".
      const c = await fetch("/not-a-response");
      assert.equal(c.status, 503);
      await c.text();
      assert.ok(errors[2] instanceof TypeError, String(errors[2]));

      const d = await fetch("/ok");
      assert.equal(await d.text(), "fine");
      assert.equal(errors.length, 3);
    }, {
      async onError(error) {
        errors.push(error);
        await Promise.resolve();
        return new Response(`handled: ${(error as Error).message}`, {
          status: 503,
          headers: { "x-handled": "yes" },
        });
      },
    });
  });

  // ----- lifecycle -----------------------------------------------------------

  test("lifecycle: onListen gets the address; serve({ ...options, handler })", async () => {
    const calls: Deno.NetAddr[] = [];
    let returned = false;
    const server = serve({
      port: 0,
      hostname: HOST,
      onListen(addr) {
        calls.push({ ...addr });
        // Deno.serve calls onListen synchronously, before serve() returns.
        assert.equal(returned, false, "onListen after serve() returned");
      },
      handler: () => new Response("object form"),
    });
    returned = true;
    try {
      assert.deepEqual({ ...server.addr }, {
        hostname: HOST,
        port: server.addr.port,
        transport: "tcp",
      });
      assert.ok(server.addr.port > 0);
      assert.deepEqual(calls, [{ ...server.addr }]);
      const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
      try {
        const res = await within(
          fetch(`http://${HOST}:${server.addr.port}/`, { client }),
          WAIT_MS,
          "fetch",
        );
        assert.equal(await res.text(), "object form");
      } finally {
        client.close();
      }
      assert.equal(calls.length, 1);
    } finally {
      await within(server.shutdown(), WAIT_MS, "shutdown()");
      await within(server.finished, WAIT_MS, "finished");
    }
  });

  test("lifecycle: the signal option stops the server", async () => {
    const controller = new AbortController();
    const server = serve(
      { port: 0, hostname: HOST, onListen() {}, signal: controller.signal },
      () => new Response("up"),
    );
    const port = server.addr.port;
    const conn = await RawConn.open(port);
    try {
      assert.equal((await conn.exchange(req("GET", "/", port))).text, "up");
      conn.close();
      controller.abort();
      await within(server.finished, WAIT_MS, "finished after abort");
      await assert.rejects(Deno.connect({ hostname: HOST, port }), Deno.errors.ConnectionRefused);
    } finally {
      conn.close();
      if (!controller.signal.aborted) controller.abort();
      await within(server.finished, WAIT_MS, "finished");
    }
  });

  test("lifecycle: shutdown() lets an in-flight slow request finish, then refuses", async () => {
    const started = Promise.withResolvers<void>();
    const events: string[] = [];
    await run(async () => {
      started.resolve();
      await sleep(300);
      events.push("handler done");
      return new Response("finished in time");
    }, async ({ server, port, connect }) => {
      const conn = await connect();
      await conn.send(req("GET", "/slow", port));
      await within(started.promise, WAIT_MS, "handler started");
      const stopping = server.shutdown().then(() => events.push("shutdown resolved"));
      const r = await conn.readResponse();
      assert.equal(r.head.status, 200);
      assert.equal(r.text, "finished in time");
      await within(stopping, WAIT_MS, "shutdown()");
      await within(server.finished, WAIT_MS, "finished");
      assert.deepEqual(events, ["handler done", "shutdown resolved"]);
      // Deno.serve then closes the connection (no connection: close header needed).
      await conn.expectClosed();
      await assert.rejects(Deno.connect({ hostname: HOST, port }), Deno.errors.ConnectionRefused);
    });
  });

  test("lifecycle: shutdown() closes idle keep-alive connections", async () => {
    await run(() => new Response("hi"), async ({ server, port, connect }) => {
      const conn = await connect();
      assert.equal((await conn.exchange(req("GET", "/", port))).text, "hi");
      await within(server.shutdown(), WAIT_MS, "shutdown() with an idle keep-alive client");
      await conn.expectClosed();
    });
  });

  // ----- limits --------------------------------------------------------------

  test("limits: a 1 MiB request body is accepted whole", async () => {
    const body = pattern(12345, 1 << 20);
    await run(async (request) => {
      const buf = await request.arrayBuffer();
      return Response.json({ length: buf.byteLength, sha: await sha256(buf) });
    }, async ({ fetch }) => {
      const got = await json(await fetch("/upload", { method: "POST", body }));
      assert.deepEqual(got, { length: 1 << 20, sha: await sha256(body) });
    });
  });

  test("limits: a 64 MiB streamed response reaches a slow reader intact", async () => {
    const TOTAL = 64 << 20;
    const CHUNK = 256 << 10;
    let produced = 0;
    await run(() =>
      new Response(
        new ReadableStream<Uint8Array>({
          pull(c) {
            if (produced >= TOTAL) return c.close();
            const n = Math.min(CHUNK, TOTAL - produced);
            c.enqueue(pattern(produced, n));
            produced += n;
          },
        }),
      ), async ({ port, connect }) => {
      const conn = await connect(64 << 10);
      await conn.send(req("GET", "/big", port));
      const head = await conn.readHead();
      assert.equal(head.status, 200);
      let received = 0;
      let nextPause = 8 << 20;
      let ahead = -1;
      await conn.readBody(head, {
        async onData(bytes) {
          for (let k = 0; k < bytes.length; k++) {
            if (bytes[k] !== patternByte(received + k)) {
              throw new Error(
                `byte ${received + k} is ${bytes[k]}, not ${patternByte(received + k)}`,
              );
            }
          }
          received += bytes.length;
          if (received >= nextPause) {
            // A slow reader: a pause every 8 MiB, a long one at 16 MiB.
            const long = nextPause === 16 << 20;
            nextPause += 8 << 20;
            await sleep(long ? 300 : 30);
            if (long) ahead = produced - received;
          }
        },
      });
      assert.equal(received, TOTAL);
      // Pulled as the client reads: Deno.serve was ~4.5 MiB ahead after the
      // 300 ms pause; a server that drained the stream into memory would be 48.
      assert.ok(ahead >= 0 && ahead < 32 << 20, `producer ${ahead} bytes ahead of the reader`);
    });
  });
}
