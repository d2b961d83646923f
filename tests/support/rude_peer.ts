/**
 * A rude peer: pushes bytes it never reads back, then resets the
 * connection, so the kernel sends RST while data is still in flight.
 *
 * @module
 */

import assert from "node:assert/strict";
import { MSG_NOSIGNAL, SO_LINGER, SOL_SOCKET } from "../../syscalls/constants.ts";
import { close, send, setsockopt } from "../../syscalls/libc.ts";
import { connectTcp } from "../../syscalls/socket.ts";
import { pattern, sleep } from "./net.ts";

const LINGER_ZERO = new Int32Array([1, 0]); // l_onoff = 1, l_linger = 0

/**
 * Connects to 127.0.0.1:`port`, waits 10 ms, sends `pattern(seed, size)`
 * with up to `tries` nonblocking sends 2 ms apart (reading nothing), then
 * closes with SO_LINGER 0. Fails ("the rude `who` sent nothing") if no
 * byte went out.
 */
export async function rudePeer(
  port: number,
  seed: number,
  size: number,
  tries: number,
  who = "peer",
): Promise<void> {
  const { fd } = connectTcp("127.0.0.1", port);
  await sleep(10);
  const bulk = pattern(seed, size);
  let sent = 0;
  for (let i = 0; i < tries && sent < bulk.length; i++) {
    const n = send(fd, bulk, bulk.length, MSG_NOSIGNAL);
    if (n > 0) sent += n;
    await sleep(2);
  }
  assert.ok(sent > 0, `the rude ${who} sent nothing`);
  setsockopt(fd, SOL_SOCKET, SO_LINGER, new Uint8Array(LINGER_ZERO.buffer), 8);
  close(fd);
}
