/**
 * A stream through the proxy is never cut short and passed off as whole.
 * The proxy runs as a real process (`main.ts serve --app proxy`); the
 * upstream is a raw socket in this process with a small receive buffer that
 * reads at a fixed, slow rate, so the proxy must hold the client back for
 * seconds at a time, longer than its idle timeout.
 *
 * Before the redesign this cut an 8 MiB upload after 3.6 MB (the client's
 * idle timeout fired while the proxy itself held the client paused) and the
 * upstream got a clean FIN.
 */

import assert from "node:assert/strict";
import { SO_RCVBUF, SOCK_CLOEXEC, SOCK_NONBLOCK, SOL_SOCKET } from "../syscalls/constants.ts";
import { EAGAIN, ECONNRESET, errnoName } from "../syscalls/errno.ts";
import { accept4, close, errno, recv } from "../syscalls/libc.ts";
import { listenTcp, localAddress, setIntOption } from "../syscalls/socket.ts";
import { dial, pattern, sleep, startCli, writeAll } from "./support/net.ts";

/** How a slow upstream's read ended. */
interface UpstreamResult {
  bytes: number;
  /** "eof" (a FIN), "reset" (ECONNRESET) or another errno name. */
  end: string;
  /** Whether every byte matched the pattern. */
  intact: boolean;
}

/**
 * Accepts one connection on `fd` and reads it at about `bytesPerSecond`;
 * after `stopAfter` bytes, reads nothing for 3 s, then drains at full speed.
 */
async function slowUpstream(
  fd: number,
  seed: number,
  bytesPerSecond: number,
  stopAfter = Infinity,
): Promise<UpstreamResult> {
  let conn = -1;
  for (let i = 0; i < 500 && conn < 0; i++) {
    conn = accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (conn < 0) await sleep(10);
  }
  if (conn < 0) throw new Error("the proxy never connected upstream");
  const step = 16 << 10;
  const buf = new Uint8Array(step);
  let bytes = 0;
  let intact = true;
  const deadline = performance.now() + 60_000;
  let rate = bytesPerSecond;
  try {
    while (performance.now() < deadline) {
      if (bytes >= stopAfter && rate !== Infinity) {
        // Stop reading for longer than the proxy's write timeout, then read
        // everything left at full speed to see how the stream ends.
        await sleep(3000);
        rate = Infinity;
      }
      const n = recv(conn, buf, step, 0x40);
      if (n > 0) {
        const want = pattern(seed, n, bytes);
        for (let k = 0; k < n; k++) if (buf[k] !== want[k]) intact = false;
        bytes += n;
        if (rate !== Infinity) await sleep((n / rate) * 1000);
        continue;
      }
      if (n === 0) return { bytes, end: "eof", intact };
      const e = errno();
      if (e !== EAGAIN) return { bytes, end: e === ECONNRESET ? "reset" : errnoName(e), intact };
      await sleep(rate === Infinity ? 1 : 5);
    }
    return { bytes, end: "still open after 60 s", intact };
  } finally {
    close(conn);
  }
}

/** A listener whose accepted sockets have a small receive buffer (so the proxy queues soon). */
function smallBufferListener(): { fd: number; port: number } {
  const fd = listenTcp({ host: "127.0.0.1", port: 0 });
  setIntOption(fd, SOL_SOCKET, SO_RCVBUF, 32 << 10);
  return { fd, port: localAddress(fd).port };
}

Deno.test("proxy: a 6 MiB upload to an upstream reading 1 MB/s arrives whole past a 1 s idle timeout", async () => {
  const upstream = smallBufferListener();
  const { cli, port } = await startCli([
    "--app",
    "proxy",
    "--upstream",
    `127.0.0.1:${upstream.port}`,
    "--idle-timeout",
    "1",
  ]);
  try {
    const total = 6 << 20;
    const client = await dial(port);
    const reading = slowUpstream(upstream.fd, 5, 1_000_000);
    const started = performance.now();
    await writeAll(client, pattern(5, total));
    await client.closeWrite();
    const got = await reading;
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `upload: ${got.bytes} of ${total} bytes in ${seconds.toFixed(1)} s, ended by ${got.end}`,
    );
    assert.equal(got.bytes, total, `the upload was cut after ${got.bytes} bytes (${got.end})`);
    assert.equal(got.end, "eof");
    assert.ok(got.intact, "bytes arrived changed");
    client.close();
  } finally {
    close(upstream.fd);
    await cli.stop("SIGKILL");
  }
});

Deno.test("proxy: an upload cut by a limit reaches the upstream as a reset, never a FIN", async () => {
  // The upstream stops reading after 1 MiB: the proxy's write timeout (1 s)
  // gives up on it with bytes still in flight both ways.
  const upstream = smallBufferListener();
  const { cli, port } = await startCli([
    "--app",
    "proxy",
    "--upstream",
    `127.0.0.1:${upstream.port}`,
    "--write-timeout",
    "1",
  ]);
  try {
    const client = await dial(port);
    const reading = slowUpstream(upstream.fd, 6, 20_000_000, 1 << 20);
    const writing = writeAll(client, pattern(6, 64 << 20)).then(() => "done", (e) => e.name);
    const got = await reading;
    console.log(`cut upload: upstream read ${got.bytes} bytes, then saw ${got.end}`);
    assert.equal(got.end, "reset", "a cut stream reached the upstream as a clean FIN");
    assert.ok(got.intact);
    // The client is reset too: its write fails instead of looking delivered.
    assert.notEqual(await writing, "done");
    client.close();
  } finally {
    close(upstream.fd);
    await cli.stop("SIGKILL");
  }
});
