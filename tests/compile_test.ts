/**
 * End-to-end test of the compiled binary: `deno task compile` (to a temp dir), then the binary's
 * `--version`, an echo round trip over a real socket, `probe` against the HTTP app, and a
 * graceful SIGTERM stop with exit code 0.
 *
 * `deno compile` needs the denort runtime, which it downloads from Deno's release server unless
 * DENORT_BIN names a local denort binary of the same version as this deno. That download is
 * blocked on the project's machines, so the test only runs when DENORT_BIN is set.
 */
import assert from "node:assert/strict";

const DENORT_BIN = Deno.env.get("DENORT_BIN");
const ROOT = new URL("../", import.meta.url);
const SKIP_MESSAGE =
  "compile test skipped: set DENORT_BIN to a denort binary (deno compile cannot download it here)";

if (!DENORT_BIN) console.log(SKIP_MESSAGE);

/** How long a stopped server may take to exit: well under the k8s grace period (30 s). */
const STOP_DEADLINE_MS = 15_000;
const START_DEADLINE_MS = 10_000;

/** The `compile` task's argv from deno.json, with the output redirected to `output`. */
async function compileArgs(output: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const task: unknown = config.tasks?.compile;
  assert.equal(typeof task, "string", "deno.json has a compile task");
  const argv = (task as string).trim().split(/\s+/);
  assert.deepEqual(argv.slice(0, 2), ["deno", "compile"], `compile task: ${task}`);
  const i = argv.indexOf("--output");
  assert.ok(i !== -1, "the compile task sets --output");
  argv[i + 1] = output;
  return argv.slice(1);
}

/** A port that was free a moment ago (the kernel picks it; closed again before use). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = l.addr as Deno.NetAddr;
  l.close();
  return port;
}

/** Connects once the server listens; fails at once, with its output, if the server exited. */
async function connectWithRetry(port: number, server: ServerProcess): Promise<Deno.TcpConn> {
  const deadline = Date.now() + START_DEADLINE_MS;
  for (;;) {
    try {
      return await Deno.connect({ hostname: "127.0.0.1", port });
    } catch (e) {
      if (server.exited) {
        assert.fail(`server exited before listening on ${port}\n${logs(await server.output)}`);
      }
      if (Date.now() > deadline) throw new Error(`nothing listens on ${port}: ${e}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error(`connection closed after ${got} of ${n} bytes`);
    got += r;
  }
  return out;
}

/** A running server process; its output is collected so a failure can show it. */
class ServerProcess {
  readonly child: Deno.ChildProcess;
  readonly output: Promise<Deno.CommandOutput>;
  exited = false;

  constructor(binary: string, args: string[]) {
    this.child = new Deno.Command(binary, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Consumes both pipes from the start, so a chatty server never blocks on a full pipe.
    this.output = this.child.output();
    this.output.then(() => this.exited = true, () => this.exited = true);
  }

  /** SIGTERM, then the exit status; SIGKILL and fail if it takes longer than the deadline. */
  async stop(): Promise<{ status: Deno.CommandOutput; logs: string; ms: number }> {
    const started = Date.now();
    this.child.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((r) => {
      timer = setTimeout(() => r("timeout"), STOP_DEADLINE_MS);
    });
    const result = await Promise.race([this.output, timeout]);
    clearTimeout(timer);
    if (result === "timeout") {
      this.child.kill("SIGKILL");
      const out = await this.output;
      assert.fail(`no exit within ${STOP_DEADLINE_MS} ms of SIGTERM\n${logs(out)}`);
    }
    return { status: result, logs: logs(result), ms: Date.now() - started };
  }

  /** Ends the process if a failed assertion left it running. */
  async kill(): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.output;
  }
}

function logs(out: Deno.CommandOutput): string {
  const dec = new TextDecoder();
  return `--- stdout ---\n${dec.decode(out.stdout)}--- stderr ---\n${dec.decode(out.stderr)}`;
}

async function compile(binary: string): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: await compileArgs(binary),
    cwd: ROOT,
    env: { DENORT_BIN: DENORT_BIN! },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, `deno compile failed\n${logs(out)}`);
  assert.ok((await Deno.stat(binary)).isFile);
}

async function checkVersion(binary: string): Promise<void> {
  const out = await new Deno.Command(binary, { args: ["--version"], stdin: "null" }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  // A full `deno` binary passed as DENORT_BIN yields a copy of the deno CLI that ignores the
  // embedded program: it answers `deno 2.x ...` here (seen with deno 2.9.6).
  assert.doesNotMatch(text, /^deno /, `DENORT_BIN is the deno CLI, not denort:\n${text}`);
  assert.ok(out.success, logs(out));
  const version = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT))).version;
  assert.equal(text, `reactor ${version} (deno ${Deno.version.deno}, ${Deno.build.target})`);
}

function serveArgs(app: "echo" | "http", port: number, workers = 1): string[] {
  return [
    "serve",
    ...["--app", app, "--host", "127.0.0.1", "--port", String(port)],
    ...["--workers", String(workers)],
  ];
}

async function echoRoundTrip(binary: string): Promise<void> {
  const port = freePort();
  // Two workers, as in deploy/kubernetes: the supervisor re-runs the binary itself (which needs
  // --allow-run in the compile task) and must pass SIGTERM on to both.
  const server = new ServerProcess(binary, serveArgs("echo", port, 2));
  try {
    const conn = await connectWithRetry(port, server);
    try {
      // A short line, then a block larger than the socket buffers, so partial reads and writes
      // in the event loop are exercised; all byte values, not just text.
      const small = new TextEncoder().encode("hello, reactor\n");
      await conn.write(small);
      assert.deepEqual(await readExactly(conn, small.length), small);

      const big = new Uint8Array(512 * 1024).map((_, i) => (i * 31 + 7) & 0xff);
      const [, echoed] = await Promise.all([
        (async () => {
          for (let off = 0; off < big.length;) off += await conn.write(big.subarray(off));
        })(),
        readExactly(conn, big.length),
      ]);
      assert.ok(echoed.every((b, i) => b === big[i]), "512 KiB echoed unchanged");
    } finally {
      conn.close();
    }
    const { status, logs, ms } = await server.stop();
    assert.equal(status.signal, null, `killed by a signal\n${logs}`);
    assert.equal(status.code, 0, `exit code after SIGTERM\n${logs}`);
    assert.ok(ms < STOP_DEADLINE_MS);
  } finally {
    await server.kill();
  }
}

async function probeAndStop(binary: string): Promise<void> {
  const port = freePort();
  const server = new ServerProcess(binary, serveArgs("http", port));
  try {
    (await connectWithRetry(port, server)).close();
    // The exact command of the image's HEALTHCHECK (there the port is 8080).
    const ok = await new Deno.Command(binary, {
      args: ["probe", "--port", String(port)],
      stdin: "null",
    }).output();
    assert.equal(ok.code, 0, `probe against a healthy server\n${logs(ok)}`);
    const { status, logs: serverLogs } = await server.stop();
    assert.equal(status.signal, null, `killed by a signal\n${serverLogs}`);
    assert.equal(status.code, 0, `exit code after SIGTERM\n${serverLogs}`);

    const down = await new Deno.Command(binary, {
      args: ["probe", "--port", String(port), "--timeout-ms", "1000"],
      stdin: "null",
    }).output();
    assert.equal(down.code, 1, `probe with nothing listening\n${logs(down)}`);
  } finally {
    await server.kill();
  }
}

Deno.test({
  name: "compiled binary: --version, echo over a socket, probe, SIGTERM exits 0",
  ignore: !DENORT_BIN,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "reactor-compile-" });
    const binary = `${dir}/reactor`;
    try {
      // Each step needs the one before it; later ones are skipped instead of failing slowly.
      const compiled = await t.step({
        name: "deno task compile (to a temp dir) with DENORT_BIN",
        fn: () => compile(binary),
      });
      const identified = await t.step({
        name: "--version names reactor, its version and the deno it was built with",
        ignore: !compiled,
        fn: () => checkVersion(binary),
      });
      await t.step({
        name: "serve --app echo --workers 2: bytes come back, SIGTERM -> exit 0",
        ignore: !identified,
        fn: () => echoRoundTrip(binary),
      });
      await t.step({
        name: "probe: exit 0 against the HTTP app (SIGTERM -> exit 0), 1 when nothing listens",
        ignore: !identified,
        fn: () => probeAndStop(binary),
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
