/**
 * Test helpers: real loopback clients (Deno's own sockets), byte patterns,
 * fd counting, and child processes running our CLI.
 *
 * @module
 */

import type { Reactor } from "../../reactor/reactor.ts";

/** Connects to 127.0.0.1:port with Deno's TCP client. */
export function dial(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

/** Writes all of `data`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Reads exactly `n` bytes, or throws if the peer closes first. */
export async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const got = await conn.read(out.subarray(off));
    if (got === null) throw new Error(`peer closed after ${off} of ${n} bytes`);
    off += got;
  }
  return out;
}

/** Reads until the peer closes; returns everything. */
export async function readToEnd(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await conn.read(buf).catch(() => null);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  return concat(...chunks);
}

/** Joins byte arrays into a new one. */
export function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Deterministic bytes: byte i of stream `seed` is a function of both. */
export function pattern(seed: number, length: number, offset = 0): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    out[i] = ((offset + i) * 31 + seed * 17 + ((offset + i) >> 8)) & 0xff;
  }
  return out;
}

/** Writes `total` bytes of stream `seed` (see `pattern`) in 1 MiB pieces. */
export async function writePattern(conn: Deno.Conn, seed: number, total: number): Promise<void> {
  const chunk = 1 << 20;
  for (let off = 0; off < total; off += chunk) {
    await writeAll(conn, pattern(seed, Math.min(chunk, total - off), off));
  }
}

/**
 * Reads `total` bytes of stream `seed` like a slow reader (a 1 ms nap every
 * 16 reads), throwing at a close or at the first byte that differs.
 * Returns how many bytes arrived.
 */
export async function readPatternSlowly(
  conn: Deno.Conn,
  seed: number,
  total: number,
): Promise<number> {
  let got = 0;
  let reads = 0;
  const buf = new Uint8Array(256 << 10);
  while (got < total) {
    const n = await conn.read(buf);
    if (n === null) throw new Error(`closed after ${got} bytes`);
    const expected = pattern(seed, n, got);
    for (let i = 0; i < n; i++) {
      if (buf[i] !== expected[i]) throw new Error(`byte ${got + i} differs`);
    }
    got += n;
    if (++reads % 16 === 0) await sleep(1);
  }
  return got;
}

/**
 * `count` clients at once, each writing `pattern(i, size(i))` to an echoing
 * port while reading it back (an echo may push back before the write ends);
 * throws if any client gets different bytes.
 */
export async function echoClients(
  port: number,
  count: number,
  size: (i: number) => number,
): Promise<void> {
  await Promise.all(Array.from({ length: count }, async (_, i) => {
    const conn = await dial(port);
    const data = pattern(i, size(i));
    const [, back] = await Promise.all([writeAll(conn, data), readExactly(conn, data.length)]);
    conn.close();
    for (let k = 0; k < data.length; k++) {
      if (back[k] !== data[k]) throw new Error(`client ${i} got different bytes at ${k}`);
    }
  }));
}

/** Median time of `n` one-byte echo round trips over one connection, in ms. */
export async function medianRoundTrip(port: number, n: number): Promise<number> {
  const conn = await dial(port);
  try {
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await writeAll(conn, pattern(i, 1));
      const back = await readExactly(conn, 1);
      if (back[0] !== pattern(i, 1)[0]) throw new Error(`round trip ${i}: got ${back[0]}`);
      times.push(performance.now() - t);
    }
    return times.sort((a, b) => a - b)[n >> 1];
  } finally {
    conn.close();
  }
}

/** How many fds this process has open. */
export function openFdCount(pid: number | "self" = "self"): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/**
 * Waits up to `ms` for this process's open fds to fall back to `before` +
 * `slack`, and fails naming both counts if they do not (a closed fd may go
 * a moment after its connection counts as closed, e.g. on io_uring once its
 * last send completed; a leak never goes). Returns the count seen.
 */
export async function assertFdsBackTo(before: number, slack = 0, ms = 5000): Promise<number> {
  // One read decides: Deno's own threads open and close fds too, and a
  // second read once counted 5 more than the read that had just passed.
  let after = openFdCount();
  await waitFor(() => (after = openFdCount()) <= before + slack, ms);
  if (after > before + slack) throw new Error(`fds: ${before} before, ${after} after`);
  return after;
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // CLK_TCK is 100 on Linux
}

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` every 10 ms until it holds or `ms` passes; returns whether it held. */
export async function waitFor(cond: () => boolean, ms = 5000): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (cond()) return true;
    await sleep(10);
  }
  return cond();
}

const ROOT = new URL("../..", import.meta.url).pathname;

/** A child process of `deno run -A main.ts ...args`, with line access to stderr. */
export class Cli {
  readonly child: Deno.ChildProcess;
  #stderr = "";
  #stdout = "";
  readonly #pumps: Promise<void>[];

  /**
   * Runs `deno run -A SCRIPT ARGS` from the repo root (`script` null: `deno
   * ARGS`, any subcommand).
   */
  constructor(args: string[], script: string | null = "main.ts", env: Record<string, string> = {}) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: script === null ? args : ["run", "-A", ROOT + script, ...args],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      env,
    }).spawn();
    const pump = async (s: ReadableStream<Uint8Array>, to: "out" | "err") => {
      const dec = new TextDecoder();
      for await (const chunk of s) {
        if (to === "out") this.#stdout += dec.decode(chunk, { stream: true });
        else this.#stderr += dec.decode(chunk, { stream: true });
      }
    };
    this.#pumps = [pump(this.child.stdout, "out"), pump(this.child.stderr, "err")];
  }

  get pid(): number {
    return this.child.pid;
  }

  get stderr(): string {
    return this.#stderr;
  }

  get stdout(): string {
    return this.#stdout;
  }

  /** Waits until stderr or stdout matches `re` (or the timeout); returns the match. */
  async waitOutput(re: RegExp, ms = 15000): Promise<RegExpMatchArray> {
    const ok = await waitFor(() => re.test(this.#stderr) || re.test(this.#stdout), ms);
    if (!ok) throw new Error(`no ${re} in output:\n${this.#stdout}\n${this.#stderr}`);
    return (this.#stderr.match(re) ?? this.#stdout.match(re))!;
  }

  /** Waits for exit; returns the code. */
  async exit(): Promise<number> {
    const status = await this.child.status;
    await Promise.all(this.#pumps);
    return status.code;
  }

  /** Sends `signal` (if still running) and waits for the exit; returns the code. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<number> {
    this.kill(signal);
    return await this.exit();
  }

  /** Sends a signal if still running. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
  }
}

/** Starts `main.ts serve` on a free port and returns the process and the port. */
export async function startCli(args: string[]): Promise<{ cli: Cli; port: number }> {
  const cli = new Cli(["serve", "--port", "0", ...args]);
  const m = await cli.waitOutput(/listening on [^\s]*:(\d+)/);
  return { cli, port: Number(m[1]) };
}

/**
 * Starts `deno serve` (the oracle of `serve --module`) on `module` (a path
 * from the repo root) on a free port of `host`; returns the process and the port.
 */
export async function startDenoServe(
  module: string,
  host = "127.0.0.1",
): Promise<{ cli: Cli; port: number }> {
  const cli = new Cli(["serve", "--port", "0", "--host", host, module], null);
  const m = await cli.waitOutput(/Listening on http:\/\/[^\s]*:(\d+)/);
  return { cli, port: Number(m[1]) };
}

/** Resolves as `p` does, or fails naming `what` after `ms`. */
export async function within<T>(p: Promise<T>, what: string, ms = 15_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `cond` (every 2 ms, on Deno's loop) until it holds; fails naming `what` after `ms`. */
export async function until(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(2);
  }
}

/**
 * Resolves once `n` reactor timers (1 ms) fired one after another: each
 * needs a wait of its own, so the loop waited at least `n` more times.
 */
export function turns(reactor: Reactor, n: number): Promise<void> {
  return within(
    new Promise<void>((resolve) => {
      let left = n;
      const tick = () => {
        if (--left <= 0) resolve();
        else reactor.setTimer(1, tick);
      };
      reactor.setTimer(1, tick);
    }),
    `${n} turns of the loop`,
  );
}
