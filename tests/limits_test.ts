import assert from "node:assert/strict";
import { Cli, cpuSeconds, dial, readExactly, sleep, writeAll } from "./support/net.ts";

Deno.test("EMFILE: more clients than fds; the server survives without spinning and serves them all", async () => {
  const cli = new Cli(["48", "--port", "0", "--app", "echo"], "tests/support/limited_server.ts");
  try {
    const port = Number((await cli.waitOutput(/listening on [^\s]*:(\d+)/))[1]);
    const ping = new TextEncoder().encode("ping");
    const clients = await Promise.all(Array.from({ length: 80 }, () => dial(port)));
    const answered = new Set<number>();
    const replies = clients.map(async (c, i) => {
      await writeAll(c, ping);
      await readExactly(c, 4);
      answered.add(i);
    });
    await sleep(500);
    // CPU time against the wall time actually measured: other processes on a
    // loaded machine stretch the window but do not add to the server's CPU.
    // 0-1% is typical, loaded or not; an acceptor that retries at once burnt
    // a whole core, and still 31-50% of one while 3 busy loops shared the 2
    // cores, so the bound sits well below that and far above the real figure.
    const cpu0 = cpuSeconds(cli.pid);
    const wall0 = performance.now();
    await sleep(1000);
    const cpu = cpuSeconds(cli.pid) - cpu0;
    const wall = (performance.now() - wall0) / 1000;
    const share = cpu / wall;
    const servedWhileFull = answered.size;
    console.log(
      `out of fds: served ${servedWhileFull} of 80, ` +
        `${cpu.toFixed(2)} s of CPU in ${wall.toFixed(2)} s (${
          (share * 100).toFixed(0)
        }% of a core)`,
    );
    assert.ok(
      servedWhileFull > 0 && servedWhileFull < 80,
      `served ${servedWhileFull} of 80 at 48 fds`,
    );
    assert.ok(
      share < 0.15,
      `the server burnt ${cpu.toFixed(2)} s of CPU in ${
        wall.toFixed(2)
      } s while out of fds (busy loop?)`,
    );
    assert.match(cli.stderr, /EMFILE/);
    // Free fds: the clients waiting in the backlog are served in turn.
    const closed = new Set<number>();
    const deadline = performance.now() + 20000;
    while (answered.size < 80 && performance.now() < deadline) {
      for (const i of answered) {
        if (!closed.has(i)) {
          clients[i].close();
          closed.add(i);
        }
      }
      await sleep(50);
    }
    assert.equal(answered.size, 80, "every client was served in the end");
    await Promise.all(replies);
    for (const [i, c] of clients.entries()) if (!closed.has(i)) c.close();
    const late = await dial(port);
    await writeAll(late, ping);
    assert.deepEqual(await readExactly(late, 4), ping, "serving again after the storm");
    late.close();
  } finally {
    assert.equal(await cli.stop(), 0, cli.stderr);
  }
});
