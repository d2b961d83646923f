/**
 * A rude peer: pushes bytes it never reads back, then resets the
 * connection, so the kernel sends RST while data is still in flight.
 *
 * @module
 */

import assert from "node:assert/strict";
import { MSG_NOSIGNAL } from "../../syscalls/constants.ts";
import { close, send } from "../../syscalls/libc.ts";
import { connectTcp, resetOnClose } from "../../syscalls/socket.ts";
import { pattern, sleep } from "./net.ts";

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
  resetOnClose(fd);
  close(fd);
}
