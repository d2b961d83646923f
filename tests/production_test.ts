/**
 * The server as an operator runs it: a separate process, real signals, many
 * connections, hostile clients.
 */
import assert from "node:assert/strict";
import {
  Cli,
  dial,
  openFdCount,
  readToEnd,
  sleep,
  startCli,
  waitFor,
  writeAll,
} from "./support/net.ts";
import { bytes, ResponseReader } from "./support/http.ts";

const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: t\r\n\r\n`;

async function stop(cli: Cli, signal: Deno.Signal = "SIGTERM"): Promise<number> {
  cli.kill(signal);
  return await cli.exit();
}

async function get(port: number, path = "/health"): Promise<{ status: number; body: string }> {
  const conn = await dial(port);
  await writeAll(conn, bytes(GET(path)));
  const r = await new ResponseReader(conn).next();
  conn.close();
  return r;
}

async function metric(port: number, name: string): Promise<number> {
  const { body } = await get(port, "/metrics");
  const m = body.match(new RegExp(`^reactor_${name}(?:\\{[^}]*\\})? (\\d+(?:\\.\\d+)?)$`, "m"));
  assert.ok(m, `no ${name} in /metrics`);
  return Number(m[1]);
}

Deno.test("production: 9,000 concurrent connections held and served, then no fd left", async () => {
  const { cli, port } = await startCli(["--app", "http"]);
  try {
    await sleep(100);
    const baseline = openFdCount(cli.pid);
    const conns: Deno.TcpConn[] = [];
    for (let i = 0; i < 9000; i += 500) {
      conns.push(...await Promise.all(Array.from({ length: 500 }, () => dial(port))));
    }
    assert.ok(
      await waitFor(() => openFdCount(cli.pid) >= baseline + 9000, 10000),
      "not all accepted",
    );
    // Every held connection is served.
    for (let i = 0; i < conns.length; i += 500) {
      await Promise.all(
        conns.slice(i, i + 500).map(async (c) => {
          await writeAll(c, bytes(GET("/")));
          const r = await new ResponseReader(c).next();
          assert.equal(r.body, "Hello, World!");
        }),
      );
    }
    assert.equal(await metric(port, "connections_open"), 9001);
    for (const c of conns) c.close();
    assert.ok(
      await waitFor(() => openFdCount(cli.pid) <= baseline, 10000),
      `fds: ${baseline} before, ${openFdCount(cli.pid)} after`,
    );
    assert.equal(await metric(port, "connections_closed_total"), 9000 + 1);
  } finally {
    assert.equal(await stop(cli), 0);
  }
});

Deno.test("production: slowloris clients are closed at the header timeout; others are served", async () => {
  const { cli, port } = await startCli(["--app", "http", "--header-timeout", "2"]);
  try {
    const started = performance.now();
    const closedAt: number[] = [];
    const slow = Array.from({ length: 500 }, async () => {
      const conn = await dial(port);
      const head = bytes("GET / HTTP/1.1\r\nHost: t\r\nX-Slow: 1\r\n\r\n");
      const reader = readToEnd(conn).then((b) => {
        closedAt.push(performance.now() - started);
        return new TextDecoder().decode(b);
      });
      for (let i = 0; i < head.length; i++) {
        if (closedAt.length === 500) break;
        const ok = await conn.write(head.subarray(i, i + 1)).then(() => true, () => false);
        if (!ok) break;
        await Promise.race([sleep(1000), reader]);
        if (performance.now() - started > 6000) break;
      }
      const text = await reader;
      conn.close();
      return text;
    });
    // Meanwhile, normal clients get prompt answers.
    for (let i = 0; i < 10; i++) {
      const t = performance.now();
      assert.equal((await get(port)).status, 200);
      assert.ok(performance.now() - t < 500, "a normal client waited");
      await sleep(200);
    }
    const answers = await Promise.all(slow);
    assert.equal(closedAt.length, 500);
    const latest = Math.max(...closedAt);
    assert.ok(latest < 4500, `last slowloris closed after ${latest.toFixed(0)} ms`);
    assert.ok(Math.min(...closedAt) > 1500, "closed before the timeout");
    assert.ok(answers.every((a) => a.startsWith("HTTP/1.1 408 ")), "each got 408");
    assert.ok(await metric(port, "timeouts_total") >= 500);
  } finally {
    assert.equal(await stop(cli), 0);
  }
});

/** A small deterministic PRNG, so a failure can be replayed. */
function rng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
}

function mutated(rand: () => number): Uint8Array {
  const base = [
    GET("/"),
    "POST /json HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789",
    "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "HEAD /json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
  ];
  const b = [...bytes(base[Math.floor(rand() * base.length)])];
  const kind = Math.floor(rand() * 8);
  const at = () => Math.floor(rand() * b.length);
  switch (kind) {
    case 0: // flip bytes
      for (let i = 0; i < 3; i++) b[at()] = Math.floor(rand() * 256);
      break;
    case 1: // truncate
      b.length = at();
      break;
    case 2: // NUL bytes
      b.splice(at(), 0, 0, 0);
      break;
    case 3: // absurd lengths
      return bytes(`POST / HTTP/1.1\r\nHost: t\r\nContent-Length: ${"9".repeat(1 + at())}\r\n\r\n`);
    case 4: // oversized header
      return bytes(`GET / HTTP/1.1\r\nHost: t\r\nX: ${"x".repeat(20000 + at())}\r\n\r\n`);
    case 5: // garbage
      return Uint8Array.from({ length: 1 + at() * 3 }, () => Math.floor(rand() * 256));
    case 6: // duplicate a slice
      b.splice(at(), 0, ...b.slice(at(), at()));
      break;
    default: // a bad chunk size
      return bytes("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
  }
  return Uint8Array.from(b);
}

Deno.test("production: 10,000 random and mutated requests; the server stays up and correct", async () => {
  const { cli, port } = await startCli(["--app", "http", "--header-timeout", "2"]);
  try {
    const rand = rng(20261123);
    const inputs = Array.from({ length: 10000 }, () => mutated(rand));
    let answered = 0;
    let closedSilently = 0;
    let next = 0;
    const worker = async () => {
      while (next < inputs.length) {
        const input = inputs[next++];
        const conn = await dial(port);
        await writeAll(conn, input).catch(() => {});
        await conn.closeWrite().catch(() => {});
        const out = await readToEnd(conn);
        conn.close();
        const text = new TextDecoder().decode(out.subarray(0, 12));
        if (out.length === 0) closedSilently++;
        else if (/^HTTP\/1\.1 \d{3}$/.test(text)) answered++;
        else assert.fail(`not an HTTP response: ${JSON.stringify(text)}`);
      }
    };
    await Promise.all(Array.from({ length: 50 }, worker));
    assert.equal(answered + closedSilently, 10000);
    assert.ok(answered > 5000, `only ${answered} answered`);
    // Still correct for a good client, and nothing crashed in a handler.
    const good = await get(port, "/");
    assert.equal(good.status, 200);
    assert.equal(good.body, "Hello, World!");
    assert.equal(await metric(port, "handler_errors_total"), 0);
    let open = -1;
    for (let i = 0; i < 100 && open !== 1; i++, await sleep(50)) {
      open = await metric(port, "connections_open");
    }
    assert.equal(open, 1, "connections left open after the storm");
  } finally {
    assert.equal(await stop(cli), 0, cli.stderr.slice(-2000));
  }
});

Deno.test("production: SIGTERM while 50 clients are mid-request: every response completes, exit 0", async () => {
  const { cli, port } = await startCli(["--app", "http", "--shutdown-timeout", "5"]);
  const partial = Array.from({ length: 25 }, async () => {
    const conn = await dial(port);
    await writeAll(conn, bytes("GET /json HTTP/1.1\r\nHost: t\r\n"));
    return conn;
  });
  // Slow readers with a lot of pipelined answers still to take.
  const heavy = Array.from({ length: 25 }, async () => {
    const conn = await dial(port);
    await writeAll(conn, bytes(GET("/").repeat(20000)));
    return conn;
  });
  const half = await Promise.all(partial);
  const slow = await Promise.all(heavy);
  await sleep(200);
  const t0 = performance.now();
  cli.kill("SIGTERM");
  await sleep(300);
  // The in-flight requests finish after the signal and still get answered.
  for (const c of half) await writeAll(c, bytes("\r\n"));
  const halfAnswers = half.map(async (c) => {
    const reader = new ResponseReader(c);
    const r = await reader.next();
    assert.equal(r.status, 200);
    assert.match(r.body, /Hello/);
    assert.equal(r.headers.get("connection"), "close");
    assert.ok(await reader.closed());
  });
  const slowAnswers = slow.map(async (c) => {
    const all = await readToEnd(c);
    const text = new TextDecoder().decode(all);
    const n = text.split("HTTP/1.1 200 OK").length - 1;
    assert.ok(text.endsWith("Hello, World!"), "a response was cut in the middle");
    assert.ok(n > 0);
  });
  await Promise.all([...halfAnswers, ...slowAnswers]);
  assert.equal(await cli.exit(), 0);
  assert.ok(performance.now() - t0 < 5500, "exited after the shutdown timeout");
  assert.match(cli.stderr, /draining/);
});

Deno.test("production: kill -9 of one worker: it is replaced and the port keeps answering", async () => {
  const cli = new Cli(["serve", "--workers", "2", "--port", "0"]);
  try {
    const port = Number((await cli.waitOutput(/supervising 2 workers on [^\s]*:(\d+)/))[1]);
    await cli.waitOutput(/listening on .*worker 0/);
    await cli.waitOutput(/listening on .*worker 1/);
    const pid = Number((await cli.waitOutput(/worker 0 started \(pid (\d+)\)/))[1]);
    Deno.kill(pid, "SIGKILL");
    await cli.waitOutput(/worker 0 died \(signal SIGKILL\)/);
    for (let i = 0; i < 50; i++) assert.equal((await get(port, "/")).status, 200);
    const m = await cli.waitOutput(
      /worker 0 started \(pid (\d+)\)[\s\S]*worker 0 started \(pid (\d+)\)/,
    );
    assert.notEqual(Number(m[2]), pid, "a new process");
    await cli.waitOutput(new RegExp(`listening on .*pid ${m[2]}, worker 0`));
  } finally {
    assert.equal(await stop(cli), 0, cli.stderr.slice(-2000));
    assert.match(cli.stderr, /all workers stopped/);
  }
});

Deno.test("production: an idle keep-alive connection is closed at --idle-timeout", async () => {
  const { cli, port } = await startCli(["--app", "http", "--idle-timeout", "0.5"]);
  try {
    const conn = await dial(port);
    const reader = new ResponseReader(conn);
    await writeAll(conn, bytes(GET("/")));
    assert.equal((await reader.next()).status, 200);
    const t = performance.now();
    assert.ok(await reader.closed(), "the server closed the idle connection");
    const after = performance.now() - t;
    assert.ok(after > 400 && after < 2000, `closed after ${after.toFixed(0)} ms`);
    conn.close();
  } finally {
    assert.equal(await stop(cli), 0);
  }
});

Deno.test("production: a peer that never reads is closed (write timeout), memory bounded", async () => {
  const { cli, port } = await startCli(["--app", "http", "--write-timeout", "0.5"]);
  try {
    const conn = await dial(port);
    // 400k pipelined requests: ~40 MB of answers the client never reads.
    const burst = bytes(GET("/").repeat(20000));
    let wrote = 0;
    const writer = (async () => {
      for (let i = 0; i < 20; i++) {
        if (!(await conn.write(burst).then(() => true, () => false))) break;
        wrote++;
      }
    })();
    await Promise.race([writer, sleep(3000)]);
    assert.ok(await waitFor(() => /timeout/.test(cli.stderr) || true, 100));
    let closed = false;
    for (let i = 0; i < 60 && !closed; i++) {
      await sleep(100);
      closed = (await metric(port, "timeouts_total")) >= 1;
    }
    assert.ok(closed, "the stalled reader was not closed");
    const rss = await metric(port, "rss_bytes");
    assert.ok(rss < 300 << 20, `RSS ${rss} bytes`);
    assert.ok(wrote < 20, "the server kept reading from a peer that does not read");
    conn.close();
  } finally {
    assert.equal(await stop(cli), 0);
  }
});

Deno.test("production: --max-connections stops accepting at the cap, resumes below it", async () => {
  const { cli, port } = await startCli(["--app", "echo", "--max-connections", "10"]);
  try {
    const conns = await Promise.all(Array.from({ length: 20 }, () => dial(port)));
    const served = new Set<number>();
    conns.forEach(async (c, i) => {
      await writeAll(c, bytes("x"));
      const b = new Uint8Array(1);
      if (await c.read(b) === 1) served.add(i);
    });
    await sleep(500);
    assert.equal(served.size, 10, "served beyond the cap");
    const first = [...served];
    for (const i of first) conns[i].close();
    assert.ok(await waitFor(() => served.size === 20, 5000), `served ${served.size}`);
    for (const [i, c] of conns.entries()) if (!first.includes(i)) c.close();
  } finally {
    cli.kill();
    assert.equal(await cli.exit(), 0);
  }
});

Deno.test("production: /metrics is Prometheus text; JSON logs and the stats line parse", async () => {
  const { cli, port } = await startCli([
    "--app",
    "http",
    "--log-format",
    "json",
    "--stats-interval",
    "0.2",
  ]);
  try {
    const { body } = await get(port, "/metrics");
    assert.match(body, /^# TYPE reactor_requests_total counter$/m);
    assert.match(body, /^reactor_connections_open 1$/m);
    assert.ok(await metric(port, "requests_total") >= 1);
    await cli.waitOutput(/stats/);
    const lines = cli.stderr.trim().split("\n");
    for (const line of lines) JSON.parse(line);
    assert.ok(lines.some((l) => JSON.parse(l).message?.includes?.("stats")));
  } finally {
    assert.equal(await stop(cli), 0);
  }
});
