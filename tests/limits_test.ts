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
    const cpu0 = cpuSeconds(cli.pid);
    await sleep(1000);
    const cpu = cpuSeconds(cli.pid) - cpu0;
    const servedWhileFull = answered.size;
    assert.ok(
      servedWhileFull > 0 && servedWhileFull < 80,
      `served ${servedWhileFull} of 80 at 48 fds`,
    );
    assert.ok(cpu < 0.3, `the server burnt ${cpu}s of CPU in 1 s while out of fds (busy loop?)`);
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
    cli.kill("SIGTERM");
    assert.equal(await cli.exit(), 0, cli.stderr);
  }
});
