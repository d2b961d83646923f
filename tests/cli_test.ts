import assert from "node:assert/strict";
import { parseCommandLine, UsageError } from "../cli/args.ts";
import { Cli, dial, readExactly, sleep, startCli, writeAll } from "./support/net.ts";
import { bytes, ResponseReader } from "./support/http.ts";
import { listenTcp, localAddress } from "../syscalls/socket.ts";
import { close } from "../syscalls/libc.ts";

Deno.test("cli: defaults of serve", () => {
  const cmd = parseCommandLine(["serve"]);
  assert.equal(cmd.command, "serve");
  if (cmd.command !== "serve") return;
  assert.equal(cmd.host, "127.0.0.1");
  assert.equal(cmd.port, 8080);
  assert.equal(cmd.trigger, "auto");
  assert.equal(cmd.backend, "epoll");
  assert.equal(cmd.maxEvents, 1024);
});

Deno.test("cli: flags that make no sense are usage errors", () => {
  const bad: [string[], RegExp][] = [
    [["serve", "--port", "http"], /--port must be a whole number/],
    [["serve", "--port", "70000"], /--port must be between 0 and 65535/],
    [["serve", "--max-events", "0"], /--max-events must be between 1/],
    [["serve", "--trigger", "sideways"], /--trigger must be one of level, edge, auto/],
    [["serve", "--app", "ftp"], /--app must be one of/],
    [["serve", "--trigger", "edge", "--backend", "poll"], /edge needs --backend epoll/],
    [["serve", "--batch-wait", "20000"], /--batch-wait must be between 0 and 10000/],
    [["serve", "--batch-wait=-5", "--backend", "poll"], /--batch-wait must be a whole number/],
    [["serve", "--batch-wait", "1.5", "--backend", "auto"], /--batch-wait must be a whole number/],
    [["serve", "--nope"], /unknown option '--nope'/],
    [["serve", "extra"], /.+/],
    [["fly"], /unknown command "fly"/],
    [["probe", "--path", "health"], /--path must start with/],
    [["serve", "--list"], /--list is only for --root/],
    [["serve", "--cache-control", "no-cache"], /--cache-control is only for --root/],
    [["serve", "--root", "/nonexistent-dir-x"], /--root \/nonexistent-dir-x: /],
    [["serve", "--root", "/etc/hostname"], /not a directory/],
    [["serve", "--root", "/tmp", "--app", "echo"], /--root is only for --app http/],
    [["serve", "--root", "/tmp", "--cache-control", ""], /--cache-control must be/],
    [["serve", "--access-log", "common"], /--access-log is for --module and --root/],
  ];
  for (const [argv, re] of bad) {
    assert.throws(() => parseCommandLine(argv), (e: unknown) => {
      assert.ok(e instanceof UsageError, `${argv.join(" ")}: ${e}`);
      assert.match(e.message, re);
      return true;
    });
  }
});

const GET = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const cli = new Cli(args);
  const code = await cli.exit();
  return { code, stdout: cli.stdout, stderr: cli.stderr };
}

Deno.test("cli: --version and --help", async () => {
  const v = await run(["--version"]);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^reactor \d+\.\d+\.\d+ \(deno 2\.\d+\.\d+, \w+-/);
  const h = await run(["--help"]);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /--trigger level\|edge\|auto/);
});

Deno.test("cli: the trigger mode: edge-triggered on epoll by default, level when asked and on poll", async () => {
  const cases: [string[], string][] = [
    [[], "epoll, edge"],
    [["--trigger", "level"], "epoll, level"],
    [["--backend", "poll"], "poll, level"],
    [["--backend", "poll", "--trigger", "auto"], "poll, level"],
  ];
  for (const [args, mode] of cases) {
    const { cli, port } = await startCli(args);
    try {
      assert.match(cli.stderr, new RegExp(`\\(${mode}-triggered`), args.join(" "));
      const conn = await dial(port);
      await writeAll(conn, bytes(GET));
      const res = await new ResponseReader(conn).next();
      assert.equal(res.status, 200, `${args.join(" ")}: a request is answered`);
      conn.close();
    } finally {
      await cli.stop();
    }
  }
});

Deno.test("cli: serve --help (deno task start --help) prints every flag and each protocol's own, exit 0", async () => {
  const h = await run(["serve", "--help"]);
  assert.equal(h.code, 0, h.stderr);
  for (
    const flag of [
      "--app",
      "--workers",
      "--metrics",
      "--max-output-bytes",
      "--max-body",
      "--upstream",
    ]
  ) {
    assert.ok(h.stdout.includes(flag), `--help does not mention ${flag}`);
  }
  // A protocol's flag with another protocol is a usage error naming its owner.
  assert.throws(
    () => parseCommandLine(["serve", "--app", "echo", "--max-body", "10"]),
    /--max-body is only for --app http/,
  );
  assert.throws(
    () => parseCommandLine(["serve", "--app", "proxy"]),
    /--app proxy needs --upstream/,
  );
});

Deno.test("cli: a bad flag is one line on stderr and exit code 2", async () => {
  const r = await run(["serve", "--port", "-1"]);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, /^reactor: /);
});

Deno.test("cli: address in use is a clear message naming the address, not a stack trace", async () => {
  const fd = listenTcp({ host: "127.0.0.1", port: 0 });
  const { port } = localAddress(fd);
  try {
    const r = await run(["serve", "--port", String(port)]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.trim(),
      `reactor: cannot listen on 127.0.0.1:${port}: address already in use (is another server running on it?)`,
    );
  } finally {
    close(fd);
  }
});

Deno.test("cli: a host that is not an address is a usage error", async () => {
  const r = await run(["serve", "--host", "example.invalid", "--port", "0"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--host not an IP address/);
  assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/);
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`cli: serve echoes, and ${signal} stops it with exit code 0`, async () => {
    const { cli, port } = await startCli(["--app", "echo"]);
    const conn = await dial(port);
    const msg = new TextEncoder().encode("over the process boundary");
    await writeAll(conn, msg);
    assert.deepEqual(await readExactly(conn, msg.length), msg);
    cli.kill(signal);
    assert.equal(await cli.exit(), 0, cli.stderr);
    assert.match(cli.stderr, new RegExp(`${signal}: draining`));
    conn.close();
  });
}

Deno.test("cli: serve on IPv6 loopback", async () => {
  const { cli, port } = await startCli(["--host", "::1", "--app", "echo"]);
  const conn = await Deno.connect({ hostname: "::1", port });
  await writeAll(conn, new Uint8Array([1, 2, 3]));
  assert.deepEqual(await readExactly(conn, 3), new Uint8Array([1, 2, 3]));
  conn.close();
  assert.equal(await cli.stop(), 0);
});

Deno.test("cli: without a usable libc, --help still works and serve fails in one line", async () => {
  // REACTOR_LIBC names the library to open; a missing one is what a system
  // without glibc looks like. Importing the CLI must not crash on it.
  const env = { REACTOR_LIBC: "/nonexistent/libc.so.6" };
  const help = new Cli(["--help"], "main.ts", env);
  assert.equal(await help.exit(), 0, help.stderr);
  assert.match(help.stdout, /--app NAME/);
  const serve = new Cli(["serve", "--port", "0"], "main.ts", env);
  assert.equal(await serve.exit(), 1);
  assert.match(serve.stderr.trim(), /^reactor: cannot open libc \(\/nonexistent\/libc\.so\.6\): /);
  assert.equal(serve.stderr.trim().split("\n").length, 1, serve.stderr);
});

Deno.test("cli: a doubled signal (Ctrl-C under deno task) keeps draining; a later one stops at once", async () => {
  const { cli, port } = await startCli(["--app", "http", "--shutdown-timeout", "20"]);
  const conn = await dial(port);
  // One write: a whole request and the start of a second. The answer to the
  // first proves the server read both, so the second is in flight when the
  // signal comes, however slow the machine (a fixed pause is not proof).
  await writeAll(conn, bytes(GET + "GET / HTTP/1.1\r\nHost: t\r\n"));
  assert.equal((await new ResponseReader(conn).next()).status, 200);
  cli.kill("SIGINT");
  await sleep(30);
  cli.kill("SIGINT"); // the same keypress, delivered twice
  // Time the next 1.5 s from when the server took the first signal, not from
  // when we sent it: the server ignores repeats within 1 s of the first.
  await cli.waitOutput(/SIGINT: draining/);
  const exited = cli.exit();
  const early = await Promise.race([exited, sleep(1500).then(() => "running")]);
  assert.equal(early, "running", "the duplicate signal cut the drain short");
  const t = performance.now();
  cli.kill("SIGINT"); // a deliberate second signal
  assert.equal(await exited, 0);
  // Well under a second is typical. Not stopping at once means draining for
  // the 20 s shutdown timeout, so a quarter of that is a safe bound.
  const took = performance.now() - t;
  console.log(`the deliberate second SIGINT stopped the server in ${took.toFixed(0)} ms`);
  assert.ok(took < 5000, `the second signal took ${took.toFixed(0)} ms to stop it`);
  assert.match(cli.stderr, /again: stopping now/);
  conn.close();
});
