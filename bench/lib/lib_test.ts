// Tests of the benchmark helpers: parsers and renderers, plus one real start/probe/stop
// of an anchor server.
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { groupPids, parseStat } from "./proc.ts";
import { httpGet, httpGetBytes, shellQuote, startServer, stopServer } from "./server.ts";
import { barChartSvg, niceTicks, stackSvgs } from "./svg.ts";
import { formatTable } from "./table.ts";
import { durationToMs, parseWrk, sizeToBytes } from "./wrk.ts";
import { parseNumberFlag, parseNumberListFlag } from "./flags.ts";

const WRK_OUTPUT = `Running 5s test @ http://127.0.0.1:20555/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   343.66us  331.90us   6.38ms   68.87%
    Req/Sec     1.11M    64.77k    1.26M    70.00%
  2214400 requests in 2.00s, 164.72MB read
  Socket errors: connect 0, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 5
Requests/sec: 1105923.21
Transfer/sec:     82.27MB
`;

Deno.test("parseWrk reads totals, latency and errors", () => {
  const r = parseWrk(WRK_OUTPUT);
  assert.equal(r.requests, 2214400);
  assert.equal(r.seconds, 2);
  assert.equal(r.rps, 1105923.21);
  assert.equal(r.latencyMeanMs, 0.34366);
  assert.equal(r.latencyMaxMs, 6.38);
  assert.deepEqual(r.errors, { connect: 0, read: 3, write: 0, timeout: 7, non2xx3xx: 5 });
  assert.equal(r.bytesRead, Math.round(164.72 * 1024 * 1024));
  assert.throws(() => parseWrk("unable to connect to 127.0.0.1:1 Connection refused"));
});

Deno.test("wrk units", () => {
  assert.equal(durationToMs("850.00us"), 0.85);
  assert.equal(durationToMs("2.01s"), 2010);
  assert.equal(durationToMs("1.50m"), 90000);
  assert.equal(sizeToBytes("800B"), 800);
  assert.equal(sizeToBytes("2.00KB"), 2048);
});

Deno.test("parseStat copes with spaces and parentheses in the command name", () => {
  const line = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 " +
    "731 52 3 4 20 0 9 0 1234 5678 900 18446744073709551615";
  const s = parseStat(line);
  assert.equal(s.pid, 4242);
  assert.equal(s.comm, "tokio (rt) 1");
  assert.equal(s.state, "S");
  assert.equal(s.session, 4242);
  assert.deepEqual([s.utime, s.stime, s.cutime, s.cstime], [731, 52, 3, 4]);
});

Deno.test("niceTicks covers the maximum with round steps", () => {
  assert.deepEqual(niceTicks(30.24), [0, 5, 10, 15, 20, 25, 30, 35]);
  assert.deepEqual(niceTicks(1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(0), [0, 1]);
});

Deno.test("barChartSvg draws one bar per value and escapes text", () => {
  const svg = barChartSvg({
    title: "a < b",
    yLabel: "µs",
    series: [{ name: "plain" }, { name: "pipelined" }],
    groups: [{ label: "x", values: [1, 2] }, { label: "y&z", values: [3, null] }],
  });
  assert.match(svg, /^<\?xml/);
  assert.equal(svg.match(/<rect [^>]*rx="2" fill/g)?.length, 3 + 2); // bars + legend swatches
  assert.ok(svg.includes("a &#60; b") && svg.includes("y&#38;z") && svg.includes("n/a"));
});

Deno.test("stackSvgs puts charts one under the other", () => {
  const chart = (title: string) =>
    barChartSvg({ title, yLabel: "µs", series: [{ name: "s" }], groups: [], height: 300 });
  const svg = stackSvgs([chart("first"), chart("second")]);
  assert.match(svg, /^<\?xml[^>]*>\n<svg [^>]*width="720" height="600"/);
  assert.equal(svg.match(/<\?xml/g)?.length, 1);
  assert.ok(svg.includes(`<svg x="0" y="300" xmlns=`), svg.slice(0, 400));
  assert.ok(svg.indexOf("first") < svg.indexOf("second"));
});

Deno.test("formatTable pads columns", () => {
  const t = formatTable(["name", "n"], [["a", "1"], ["bbb", "22"]]);
  assert.equal(t, "name   n\n----  --\na      1\nbbb   22");
});

Deno.test("shellQuote", () => {
  assert.equal(shellQuote("/usr/bin/deno"), "/usr/bin/deno");
  assert.equal(shellQuote("it's here"), `'it'\\''s here'`);
});

Deno.test("startServer runs a server in its own session and stopServer kills it all", async () => {
  const anchor = resolve(import.meta.dirname!, "../anchors/deno_listen.ts");
  const cmd = `${shellQuote(Deno.execPath())} run --no-config --allow-net --allow-env=PORT ` +
    `${shellQuote(anchor)} & sleep 60 & wait`;
  const server = await startServer({ name: "test", cmd });
  try {
    const res = await httpGet(server.port, "/plaintext");
    assert.equal(res.status, 200);
    assert.equal(res.body, "Hello, World!");
    const sample = server.sample();
    assert.ok(sample.pids.length >= 3, `sh, deno and sleep: ${sample.pids}`);
    assert.ok(sample.rssBytes > 0);
  } finally {
    const stop = await stopServer(server);
    assert.deepEqual(stop.leftover, []);
    assert.deepEqual(groupPids(server.pid), []);
    await Deno.remove(resolve(server.logPath, ".."), { recursive: true });
  }
});

Deno.test("httpGetBytes reads a binary body whole, httpGet decodes it", async () => {
  const bytes = new Uint8Array(300_000).map((_, i) => i % 251);
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    (req) => new URL(req.url).pathname === "/bin" ? new Response(bytes) : new Response("héllo"),
  );
  try {
    const res = await httpGetBytes(server.addr.port, "/bin");
    assert.equal(res.status, 200);
    assert.equal(res.headers["content-length"], String(bytes.length));
    assert.deepEqual(res.body, bytes);
    const text = await httpGet(server.addr.port, "/text");
    assert.equal(text.body, "héllo");
  } finally {
    ac.abort();
    await server.finished;
  }
});

Deno.test("numeric flags: numbers in range pass, anything else names the flag", () => {
  assert.equal(parseNumberFlag("windows", "3", { min: 1, integer: true }), 3);
  assert.equal(parseNumberFlag("window-seconds", "1.5", { min: 0.1 }), 1.5);
  assert.deepEqual(parseNumberListFlag("idle", "0, 900,9000", { integer: true }), [0, 900, 9000]);
  for (const bad of ["", "abc", "2x", "NaN", "Infinity", "-1", "0.5"]) {
    assert.throws(
      () => parseNumberFlag("windows", bad, { min: 1, integer: true }),
      /--windows wants a whole number >= 1/,
      `'${bad}' was accepted`,
    );
  }
  assert.throws(() => parseNumberListFlag("idle", ",", {}), /--idle wants a comma-separated list/);
  assert.throws(
    () => parseNumberListFlag("idle", "1,x", {}),
    /--idle wants a number >= 0, got 'x'/,
  );
});
