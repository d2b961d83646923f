/**
 * `--batch-wait` on the backends that cannot wait for a count (epoll, poll):
 * the loop sleeps after a small turn so the next wait finds more. Real
 * server processes: exact bytes under load, the sleeps counted, and a lone
 * client never made to wait (one fd cannot fill a batch).
 * io_uring's batched waits (in the kernel) are tested in io_uring_test.ts.
 */
import assert from "node:assert/strict";
import { type Cli, echoClients, medianRoundTrip, startCli, waitFor } from "./support/net.ts";

/** The server's counters, from the stats line SIGUSR2 makes it log. */
async function batchSleeps(cli: Cli): Promise<number> {
  const before = cli.stderr.length;
  cli.kill("SIGUSR2");
  const re = /stats .*?batch_sleeps_total"?: (\d+)/;
  assert.ok(await waitFor(() => re.test(cli.stderr.slice(before))), "a stats line after SIGUSR2");
  return Number(cli.stderr.slice(before).match(re)![1]);
}

for (const backend of ["epoll", "poll"]) {
  Deno.test(`cli: --batch-wait on ${backend}: 100 clients exact, the loop sleeps after small turns, never for a lone client`, async () => {
    const base = await startCli(["--backend", backend, "--app", "echo"]);
    let baseline: number;
    try {
      await echoClients(base.port, 100, (i) => 1 + (i * 7919) % 70_000);
      assert.equal(await batchSleeps(base.cli), 0, "no --batch-wait: never sleeps");
      baseline = await medianRoundTrip(base.port, 200);
    } finally {
      await base.cli.stop();
    }
    const { cli, port } = await startCli([
      "--backend",
      backend,
      "--batch-wait",
      "200",
      "--app",
      "echo",
    ]);
    try {
      // epoll is edge-triggered by default (--trigger auto), poll only level-triggered.
      const mode = backend === "epoll" ? "edge" : "level";
      assert.match(
        cli.stderr,
        new RegExp(`\\(${backend}, batched waits 200 µs, ${mode}-triggered`),
      );
      await echoClients(port, 100, (i) => 1 + (i * 7919) % 70_000);
      // 32 clients doing round trips one after another: turns of a few events among 33 fds.
      await Promise.all(Array.from({ length: 32 }, () => medianRoundTrip(port, 50)));
      const slept = await batchSleeps(cli);
      assert.ok(slept > 0, `the loop slept before waits: ${slept}`);
      // A lone client: every turn is small, but one fd (and the listener)
      // can never fill a batch, so the loop does not make it wait.
      const batched = await medianRoundTrip(port, 200);
      const alone = await batchSleeps(cli) - slept;
      console.log(
        `${backend}: median echo round trip ${baseline.toFixed(3)} ms, with --batch-wait 200: ${
          batched.toFixed(3)
        } ms; ${slept} sleeps under load, ${alone} for the lone client`,
      );
      assert.equal(alone, 0, "no sleep for a lone client");
      assert.ok(
        batched < baseline + 1.2,
        `round trips took ${batched.toFixed(3)} ms (without: ${baseline.toFixed(3)} ms)`,
      );
    } finally {
      await cli.stop();
    }
  });
}
