/**
 * examples/kv.ts as a newcomer runs it: `deno run -A /abs/path/examples/kv.ts
 * --port 0` from a directory outside the repo (no deno.json, no import map),
 * then real TCP clients. Every wait is bounded.
 *
 * @module
 */

import assert from "node:assert/strict";

const KV = new URL("../examples/kv.ts", import.meta.url).pathname;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `promise`, or a rejection naming `what` after `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A line-oriented client over Deno's own TCP socket. */
class Client {
  readonly conn: Deno.TcpConn;
  #rest = new Uint8Array(0); // bytes read past the last line handed out

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  static async dial(port: number): Promise<Client> {
    const conn = await within(10_000, "connect", Deno.connect({ hostname: "127.0.0.1", port }));
    conn.setNoDelay(true);
    return new Client(conn);
  }

  async send(text: string | Uint8Array): Promise<void> {
    let data = typeof text === "string" ? encoder.encode(text) : text;
    while (data.length > 0) data = data.subarray(await this.conn.write(data));
  }

  /** The next bytes: what is left over, else one read (null at EOF). */
  async #chunk(what: string): Promise<Uint8Array | null> {
    if (this.#rest.length > 0) {
      const out = this.#rest;
      this.#rest = new Uint8Array(0);
      return out;
    }
    const buf = new Uint8Array(256 * 1024);
    const n = await within(15_000, what, this.conn.read(buf));
    return n === null ? null : buf.subarray(0, n);
  }

  /** One line, without its "\n". */
  async line(): Promise<string> {
    let acc = new Uint8Array(0);
    for (;;) {
      const nl = acc.indexOf(0x0a);
      if (nl >= 0) {
        this.#rest = acc.slice(nl + 1);
        return decoder.decode(acc.subarray(0, nl));
      }
      const got = await this.#chunk("a reply line");
      if (got === null) throw new Error(`EOF before a full line (had "${decoder.decode(acc)}")`);
      const next = new Uint8Array(acc.length + got.length);
      next.set(acc);
      next.set(got, acc.length);
      acc = next;
    }
  }

  /** Reads a BIG reply as it streams: exactly `n` "x" then "\n". Returns the reads it took. */
  async big(n: number): Promise<number> {
    let seen = 0;
    let reads = 0;
    while (seen <= n) {
      const got = await this.#chunk(`BIG reply (${seen} of ${n + 1} bytes so far)`);
      if (got === null) throw new Error(`EOF after ${seen} of ${n + 1} BIG bytes`);
      reads++;
      const take = Math.min(got.length, n + 1 - seen);
      for (let i = 0; i < take; i++) {
        const want = seen + i < n ? 0x78 : 0x0a;
        if (got[i] !== want) throw new Error(`BIG byte ${seen + i} is ${got[i]}, want ${want}`);
      }
      seen += take;
      if (take < got.length) this.#rest = got.slice(take);
    }
    return reads;
  }

  /** Asserts the server closed: nothing more, then EOF. */
  async eof(): Promise<void> {
    const got = await this.#chunk("EOF");
    if (got !== null) throw new Error(`expected EOF, got "${decoder.decode(got)}"`);
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

/** examples/kv.ts in a child process started from a fresh temp directory. */
class KvProcess {
  readonly child: Deno.ChildProcess;
  readonly dir: string;
  port = 0;
  stdout = "";
  stderr = "";
  readonly #pumps: Promise<void>[];
  #firstLine: Promise<string>;

  constructor(dir: string) {
    this.dir = dir;
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", KV, "--port", "0"],
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    let gotLine: (line: string) => void = () => {};
    this.#firstLine = new Promise((resolve) => gotLine = resolve);
    const pump = async (stream: ReadableStream<Uint8Array>, out: "stdout" | "stderr") => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        this[out] += text;
        const nl = this.stdout.indexOf("\n");
        if (out === "stdout" && nl >= 0) gotLine(this.stdout.slice(0, nl));
      }
    };
    this.#pumps = [pump(this.child.stdout, "stdout"), pump(this.child.stderr, "stderr")];
  }

  /** Waits for `kv listening on 127.0.0.1:PORT` (a first run may fetch npm packages). */
  async listening(): Promise<void> {
    const line = await within(
      120_000,
      "the 'kv listening on' line",
      Promise.race([
        this.#firstLine,
        this.child.status.then((s) => {
          throw new Error(`kv exited (${s.code}) before listening; stderr:\n${this.stderr}`);
        }),
      ]),
    );
    const m = /^kv listening on 127\.0\.0\.1:(\d+)$/.exec(line);
    assert(m, `unexpected first line: "${line}"`);
    this.port = Number(m[1]);
    assert(this.port > 0, `port 0 should have been replaced: ${line}`);
  }

  /** Waits for the exit; returns its code. */
  async exit(what: string): Promise<number> {
    const status = await within(20_000, what, this.child.status);
    await within(5_000, "the child's output to end", Promise.all(this.#pumps));
    return status.code;
  }

  kill(): void {
    try {
      this.child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
}

Deno.test("examples/kv.ts: the line protocol over real TCP, run from outside the repo", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "kv_example_" });
  const kv = new KvProcess(dir);
  const clients: Client[] = [];
  const dial = async () => {
    const c = await Client.dial(kv.port);
    clients.push(c);
    return c;
  };
  let exited = false;
  try {
    await kv.listening();

    await t.step("SET, GET, NOT_FOUND", async () => {
      const c = await dial();
      await c.send("SET greeting hello\n");
      assert.equal(await c.line(), "OK");
      await c.send("GET greeting\n");
      assert.equal(await c.line(), "VALUE hello");
      await c.send("GET nobody\n");
      assert.equal(await c.line(), "NOT_FOUND");
      // Another connection sees the same store.
      const d = await dial();
      await d.send("GET greeting\n");
      assert.equal(await d.line(), "VALUE hello");
    });

    await t.step("a value with spaces, and \\r\\n line endings", async () => {
      const c = await dial();
      await c.send("SET motto  two  spaces and more \r\n");
      assert.equal(await c.line(), "OK");
      await c.send("GET motto\r\n");
      assert.equal(await c.line(), "VALUE  two  spaces and more ");
    });

    await t.step("pipelined commands in one write", async () => {
      const c = await dial();
      await c.send("SET p1 one\nSET p2 two\nGET p1\nGET p2\nGET p3\nBIG 3\nGET p1\n");
      for (const want of ["OK", "OK", "VALUE one", "VALUE two", "NOT_FOUND", "xxx", "VALUE one"]) {
        assert.equal(await c.line(), want);
      }
    });

    await t.step("a command split byte by byte across writes", async () => {
      const c = await dial();
      const bytes = encoder.encode("SET split by-bytes value\r\nGET split\n");
      for (let i = 0; i < bytes.length; i++) {
        await c.send(bytes.subarray(i, i + 1));
        await new Promise((r) => setTimeout(r, 2)); // let each byte be its own read
      }
      assert.equal(await c.line(), "OK");
      assert.equal(await c.line(), "VALUE by-bytes value");
    });

    await t.step("BIG 40000000 arrives whole, then the command pipelined after it", async () => {
      const n = 40_000_000;
      const c = await dial();
      const t0 = performance.now();
      // The GET after BIG waits in the server until the peer has read most of the 40 MB.
      await c.send(`BIG ${n}\nGET greeting\n`);
      const reads = await within(60_000, "the whole BIG reply", c.big(n));
      const ms = performance.now() - t0;
      assert.equal(await c.line(), "VALUE hello");
      console.log(
        `    BIG ${n}: ${ms.toFixed(0)} ms, ${
          (n / 1e6 / (ms / 1000)).toFixed(0)
        } MB/s, ${reads} reads`,
      );
    });

    await t.step("BIG then a half-close: everything is answered, then EOF", async () => {
      const c = await dial();
      await c.send("BIG 5000000\nGET greeting\n");
      await c.conn.closeWrite();
      await c.big(5_000_000);
      assert.equal(await c.line(), "VALUE hello");
      await c.eof();
    });

    await t.step("an unknown command gets ERROR and the connection goes on", async () => {
      const c = await dial();
      await c.send("FROB x\n");
      const err = await c.line();
      assert(err.startsWith("ERROR "), `expected ERROR, got "${err}"`);
      await c.send("GET greeting\n");
      assert.equal(await c.line(), "VALUE hello");
    });

    await t.step("a line over 64 KiB gets ERROR, then the connection closes", async () => {
      const c = await dial();
      const sending = c.send("SET long " + "y".repeat(70_000) + "\n").catch(() => {});
      const err = await c.line();
      assert(err.startsWith("ERROR "), `expected ERROR, got "${err}"`);
      await c.eof();
      await within(10_000, "sending the long line", sending);
    });

    await t.step("QUIT: BYE, then EOF", async () => {
      const c = await dial();
      await c.send("QUIT\nGET greeting\n"); // nothing after QUIT is answered
      assert.equal(await c.line(), "BYE");
      await c.eof();
    });

    await t.step("SIGTERM: an idle client is closed, the process exits 0", async () => {
      // Close the clients of the steps above first: a client that never closes
      // its side holds the server's lingering close (2 s) during the shutdown.
      for (const c of clients.splice(0)) c.close();
      const c = await dial();
      await c.send("GET greeting\n");
      assert.equal(await c.line(), "VALUE hello");
      const t0 = performance.now();
      kv.child.kill("SIGTERM");
      await c.eof();
      c.close();
      const code = await kv.exit("exit after SIGTERM");
      exited = true;
      assert.equal(code, 0, `exit code ${code}; stderr:\n${kv.stderr}`);
      console.log(`    SIGTERM to exit: ${(performance.now() - t0).toFixed(0)} ms`);
      assert.equal(kv.stdout, `kv listening on 127.0.0.1:${kv.port}\n`);
      assert.equal(kv.stderr, "", "nothing on stderr");
    });
  } finally {
    for (const c of clients) c.close();
    if (!exited) {
      kv.kill();
      await kv.exit("exit after SIGKILL").catch(() => {});
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/kv.ts: a bad flag is one line on stderr and exit code 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kv_example_" });
  try {
    for (const args of [["--bogus"], ["--port", "http"], ["--port", "70000"], ["stray"]]) {
      const out = await within(
        60_000,
        `kv ${args.join(" ")}`,
        new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", KV, ...args],
          cwd: dir,
          stdin: "null",
          env: { NO_COLOR: "1" },
        }).output(),
      );
      const err = decoder.decode(out.stderr);
      assert.equal(out.code, 2, `kv ${args.join(" ")}: exit ${out.code}; stderr:\n${err}`);
      assert.equal(err.trimEnd().split("\n").length, 1, `one stderr line, got:\n${err}`);
      assert.equal(decoder.decode(out.stdout), "");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
