/**
 * `--metrics HOST:PORT`: the admin listener, in one process and in front of
 * worker processes (real processes, real signals).
 */
import assert from "node:assert/strict";
import { Cli, dial, readExactly, sleep, writeAll } from "./support/net.ts";
import { bytes, ResponseReader } from "./support/http.ts";
import { mergeExpositions, parseAdminReport } from "../server/admin.ts";

const ADMIN = /admin endpoint http:\/\/[^\s]*:(\d+)/;
/** An echo server of two workers with the admin endpoint on a free port. */
const TWO_WORKERS = [
  "serve",
  "--app",
  "echo",
  "--port",
  "0",
  "--workers",
  "2",
  "--metrics",
  "127.0.0.1:0",
];

/** One GET over a fresh connection (no proxy, no pool); bounded by the server's answer. */
async function get(
  port: number,
  path: string,
): Promise<{ status: number; type: string; body: string }> {
  const conn = await dial(port);
  try {
    await writeAll(conn, bytes(`GET ${path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n`));
    const r = await new ResponseReader(conn).next();
    return { status: r.status, type: r.headers.get("content-type") ?? "", body: r.body };
  } finally {
    conn.close();
  }
}

/** The samples of `reactor_<name>`, by their label text ("" for none). */
function samples(body: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  const re = new RegExp(`^reactor_${name}(\\{[^}]*\\})? (\\S+)$`, "gm");
  for (const m of body.matchAll(re)) out.set(m[1] ?? "", Number(m[2]));
  return out;
}

/** `count` echo round trips of one byte, one connection each, so each was accepted. */
async function echoConnections(port: number, count: number): Promise<void> {
  await Promise.all(Array.from({ length: count }, async () => {
    const conn = await dial(port);
    await writeAll(conn, bytes("x"));
    await readExactly(conn, 1);
    conn.close();
  }));
}

/**
 * Checks the exposition is well formed: every `# HELP`/`# TYPE` line once,
 * and each family's samples right after its TYPE line, in one block.
 */
function assertValidExposition(body: string): void {
  const lines = body.trimEnd().split("\n");
  const meta = lines.filter((l) => l.startsWith("#"));
  assert.equal(new Set(meta).size, meta.length, "a HELP or TYPE line repeated");
  const typed = new Set<string>();
  const done = new Set<string>();
  let current = "";
  for (const line of lines) {
    const t = line.match(/^# TYPE (\S+) (counter|gauge)$/);
    if (t) {
      assert.ok(!typed.has(t[1]), `${t[1]} typed twice`);
      typed.add(t[1]);
      if (current) done.add(current);
      current = t[1];
      continue;
    }
    if (line.startsWith("# HELP ")) continue;
    const name = line.match(/^([a-z_]+)(\{[^}]*\})? -?\d+(\.\d+)?(e[+-]?\d+)?$/)?.[1];
    assert.ok(name, `not a sample line: ${line}`);
    assert.equal(name, current, `${name} outside its family's block`);
    assert.ok(!done.has(name));
  }
}

async function stop(cli: Cli): Promise<number> {
  cli.kill("SIGTERM");
  const timeout = sleep(15000).then(() => "timeout" as const);
  const code = await Promise.race([cli.exit(), timeout]);
  if (code === "timeout") {
    await cli.stop("SIGKILL");
    assert.fail(`no exit within 15 s after SIGTERM:\n${cli.stderr.slice(-2000)}`);
  }
  return code;
}

/** True when nothing listens on 127.0.0.1:port any more. */
async function refused(port: number): Promise<boolean> {
  try {
    (await dial(port)).close();
    return false;
  } catch {
    return true;
  }
}

Deno.test("admin: merging keeps each HELP/TYPE once and groups the samples", () => {
  const worker = (n: number) =>
    `# HELP reactor_a_total A.\n# TYPE reactor_a_total counter\nreactor_a_total{worker="${n}"} ${n}\n` +
    `# HELP reactor_b B.\n# TYPE reactor_b gauge\nreactor_b{worker="${n}"} 1\n`;
  const merged = mergeExpositions([
    worker(0),
    worker(1),
    "",
    "# TYPE reactor_c gauge\nreactor_c 2\n",
  ]);
  assert.equal(
    merged,
    "# HELP reactor_a_total A.\n# TYPE reactor_a_total counter\n" +
      'reactor_a_total{worker="0"} 0\nreactor_a_total{worker="1"} 1\n' +
      "# HELP reactor_b B.\n# TYPE reactor_b gauge\n" +
      'reactor_b{worker="0"} 1\nreactor_b{worker="1"} 1\n' +
      "# TYPE reactor_c gauge\nreactor_c 2\n",
  );
  assertValidExposition(merged);
  assert.equal(parseAdminReport("reactor-admin-port 4321\n"), 4321);
  assert.equal(parseAdminReport("reactor-admin-port 0"), null);
  assert.equal(parseAdminReport("hello"), null);
});

Deno.test("admin: one process serves /metrics and /health on its own address; SIGTERM exits 0", async () => {
  const cli = new Cli(["serve", "--app", "echo", "--port", "0", "--metrics", "127.0.0.1:0"]);
  let exited = false;
  try {
    const port = Number((await cli.waitOutput(/listening on [^\s]*:(\d+)/))[1]);
    const adminPort = Number((await cli.waitOutput(ADMIN))[1]);
    assert.notEqual(adminPort, port);
    await echoConnections(port, 3);
    const m = await get(adminPort, "/metrics");
    assert.equal(m.status, 200);
    assert.match(m.type, /^text\/plain; version=0\.0\.4/);
    assert.match(m.body, /^# TYPE reactor_connections_accepted_total counter$/m);
    assert.deepEqual(samples(m.body, "connections_accepted_total"), new Map([["", 3]]));
    assertValidExposition(m.body);
    assert.deepEqual(await get(adminPort, "/health"), {
      status: 200,
      type: "text/plain",
      body: "OK",
    });
    assert.equal((await get(adminPort, "/nope")).status, 404);
    // An idle keep-alive client of the admin listener does not hold up the exit.
    const idle = await dial(adminPort);
    await writeAll(idle, bytes("GET /health HTTP/1.1\r\nHost: t\r\n\r\n"));
    assert.equal((await new ResponseReader(idle).next()).status, 200);
    const t0 = performance.now();
    const code = await stop(cli);
    exited = true;
    idle.close();
    assert.equal(code, 0, cli.stderr.slice(-2000));
    assert.ok(performance.now() - t0 < 5000, "the exit waited on the admin listener");
    assert.ok(await refused(adminPort), "the admin port still answers");
    assert.equal(cli.stderr.match(/admin endpoint/g)?.length, 1, "one admin log line");
  } finally {
    if (!exited) await stop(cli);
  }
});

Deno.test("admin: the admin listener stays up through the drain; /health answers 503 draining", async () => {
  const cli = new Cli([
    "serve",
    "--app",
    "http",
    "--port",
    "0",
    "--metrics",
    "127.0.0.1:0",
    "--shutdown-timeout",
    "20",
  ]);
  let exited = false;
  try {
    const port = Number((await cli.waitOutput(/listening on [^\s]*:(\d+)/))[1]);
    const adminPort = Number((await cli.waitOutput(ADMIN))[1]);
    // A request in flight (its head not finished) keeps the drain going.
    const conn = await dial(port);
    await writeAll(conn, bytes("GET / HTTP/1.1\r\nHost: t\r\n"));
    for (const end = performance.now() + 10000; performance.now() < end;) {
      const m = await get(adminPort, "/metrics");
      if (samples(m.body, "connections_open").get("") === 1) break;
      await sleep(50);
    }
    cli.kill("SIGTERM");
    await cli.waitOutput(/SIGTERM: draining/);
    assert.deepEqual(await get(adminPort, "/health"), {
      status: 503,
      type: "text/plain",
      body: "draining",
    });
    const m = await get(adminPort, "/metrics");
    assert.equal(m.status, 200, "no /metrics while draining");
    assert.deepEqual(samples(m.body, "connections_open"), new Map([["", 1]]));
    // The request completes; then the server, and its admin listener, go.
    await writeAll(conn, bytes("\r\n"));
    const r = await new ResponseReader(conn).next();
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("connection"), "close");
    conn.close();
    const code = await Promise.race([cli.exit(), sleep(15000).then(() => "timeout" as const)]);
    assert.equal(code, 0, cli.stderr.slice(-2000));
    exited = true;
    assert.ok(await refused(adminPort), "the admin port still answers after the exit");
  } finally {
    if (!exited) await stop(cli);
  }
});

Deno.test("admin: --workers 2: /metrics merges every worker; SIGTERM exits 0", async () => {
  const cli = new Cli(TWO_WORKERS);
  let exited = false;
  try {
    const port = Number((await cli.waitOutput(/supervising 2 workers on [^\s]*:(\d+)/))[1]);
    const adminPort = Number((await cli.waitOutput(ADMIN))[1]);
    await cli.waitOutput(/listening on .*worker 0/);
    await cli.waitOutput(/listening on .*worker 1/);
    const connections = 40;
    await echoConnections(port, connections);
    // A worker is scraped once it has reported its port: poll, bounded.
    let body = "";
    let accepted = new Map<string, number>();
    const sum = () => [...accepted.values()].reduce((a, b) => a + b, 0);
    const complete = () => accepted.size === 2 && sum() === connections;
    for (const end = performance.now() + 15000; performance.now() < end;) {
      const r = await get(adminPort, "/metrics");
      assert.equal(r.status, 200);
      body = r.body;
      accepted = samples(body, "connections_accepted_total");
      if (complete()) break;
      await sleep(100);
    }
    assert.ok(complete(), `accepted: ${JSON.stringify([...accepted])}\n${body}`);
    assert.deepEqual([...accepted.keys()].sort(), ['{worker="0"}', '{worker="1"}']);
    assertValidExposition(body);
    for (const name of ["connections_accepted_total", "connections_open", "events_total"]) {
      assert.equal(("\n" + body).split(`\n# HELP reactor_${name} `).length, 2, `HELP of ${name}`);
      assert.equal(("\n" + body).split(`\n# TYPE reactor_${name} `).length, 2, `TYPE of ${name}`);
    }
    assert.deepEqual(samples(body, "supervisor_workers_running"), new Map([["", 2]]));
    assert.deepEqual(samples(body, "supervisor_worker_restarts_total"), new Map([["", 0]]));
    assert.equal(samples(body, "supervisor_scrape_errors_total").size, 1);
    assert.equal((await get(adminPort, "/health")).body, "OK");
    // The workers' own admin ports are internal: the report lines never reach stdout.
    assert.doesNotMatch(cli.stdout, /reactor-admin-port/);
    const code = await stop(cli);
    exited = true;
    assert.equal(code, 0, cli.stderr.slice(-2000));
    assert.match(cli.stderr, /all workers stopped/);
    assert.ok(await refused(adminPort), "the admin port still answers");
  } finally {
    if (!exited) await stop(cli);
  }
});

Deno.test("admin: --workers 2: a stopped worker is skipped and counted; a restarted one reports a new port", async () => {
  const cli = new Cli(TWO_WORKERS);
  let exited = false;
  let frozen = 0;
  try {
    const adminPort = Number((await cli.waitOutput(ADMIN))[1]);
    const pid0 = Number((await cli.waitOutput(/worker 0 started \(pid (\d+)\)/))[1]);
    const pid1 = Number((await cli.waitOutput(/worker 1 started \(pid (\d+)\)/))[1]);
    const workersIn = async () => {
      const { body } = await get(adminPort, "/metrics");
      return { body, labels: [...samples(body, "connections_open").keys()].sort() };
    };
    const until = async (want: string[], ms = 15000) => {
      let last = { body: "", labels: [] as string[] };
      for (const end = performance.now() + ms; performance.now() < end; await sleep(100)) {
        last = await workersIn();
        if (JSON.stringify(last.labels) === JSON.stringify(want)) return last.body;
      }
      assert.fail(`wanted ${want} in /metrics, got ${last.labels}\n${cli.stderr.slice(-2000)}`);
    };
    const both = ['{worker="0"}', '{worker="1"}'];
    const errors = () => samples(before, "supervisor_scrape_errors_total").get("") ?? NaN;
    const before = await until(both);

    // A worker that does not answer (SIGSTOP) is skipped after the timeout.
    Deno.kill(pid1, "SIGSTOP");
    frozen = pid1;
    const t0 = performance.now();
    const { body, labels } = await workersIn();
    const took = performance.now() - t0;
    Deno.kill(pid1, "SIGCONT");
    frozen = 0;
    assert.deepEqual(labels, ['{worker="0"}']);
    assert.ok(took < 5000, `the scrape took ${took.toFixed(0)} ms`);
    assert.deepEqual(
      samples(body, "supervisor_scrape_errors_total"),
      new Map([["", errors() + 1]]),
    );
    assertValidExposition(body);
    await until(both);

    // A worker killed and restarted is scraped again on its new port.
    Deno.kill(pid0, "SIGKILL");
    await cli.waitOutput(/worker 0 died \(signal SIGKILL\)/);
    const after = await until(both);
    assert.deepEqual(samples(after, "supervisor_worker_restarts_total"), new Map([["", 1]]));
    assert.deepEqual(samples(after, "supervisor_workers_running"), new Map([["", 2]]));
    const code = await stop(cli);
    exited = true;
    assert.equal(code, 0, cli.stderr.slice(-2000));
  } finally {
    if (frozen) Deno.kill(frozen, "SIGCONT");
    if (!exited) await stop(cli);
  }
});

Deno.test("admin: an admin address in use is one line and exit code 1", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  try {
    for (const extra of [[], ["--workers", "2"]]) {
      const cli = new Cli(["serve", "--port", "0", "--metrics", `127.0.0.1:${port}`, ...extra]);
      const code = await Promise.race([cli.exit(), sleep(15000).then(() => -1)]);
      if (code === -1) cli.kill("SIGKILL");
      assert.equal(code, 1, `${extra.join(" ")}: ${cli.stderr}`);
      assert.equal(
        cli.stderr,
        `reactor: cannot listen on 127.0.0.1:${port} (--metrics): ` +
          "address already in use (is another server running on it?)\n",
      );
    }
  } finally {
    taken.close();
  }
});
