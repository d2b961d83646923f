/**
 * Clients that pipeline requests and never read: each sends the same request
 * over and over, nonblocking, until the server stops taking bytes from any
 * of them. What the server holds for them then is the cost of a stalled
 * client. Used by tests/memory_test.ts and bench/experiments/stalled.ts.
 *
 * @module
 */

import { EAGAIN } from "../../syscalls/errno.ts";
import { MSG_DONTWAIT, MSG_NOSIGNAL, SO_RCVBUF, SOL_SOCKET } from "../../syscalls/constants.ts";
import { close, errno, send } from "../../syscalls/libc.ts";
import { connectTcp, setIntOption } from "../../syscalls/socket.ts";
import { sleep } from "./net.ts";

/** The resident set size of a process, from /proc (bytes). */
export function rssOf(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = status.match(/^VmRSS:\s+(\d+) kB/m);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** What a stalled-clients run did. */
export interface StalledRun {
  /** Bytes the clients got the server to take, in total. */
  bytesSent: number;
  /** Rounds until no client could send more. */
  rounds: number;
  /** Whether the run ended because nothing moved any more (not the time limit). */
  settled: boolean;
  /** Closes every client. */
  close(): void;
}

/**
 * Opens `clients` connections to `port` and sends `request` pipelined on each
 * until a whole `quietRounds` rounds pass in which no client could send a byte
 * (or `maxMs` passes). `receiveBuffer` > 0 shrinks the clients' receive
 * buffers (less kernel memory, a faster run; the server's side is the same).
 */
export async function stallClients(opts: {
  port: number;
  clients: number;
  request: Uint8Array;
  receiveBuffer?: number;
  quietRounds?: number;
  maxMs?: number;
}): Promise<StalledRun> {
  const chunk = new Uint8Array(Math.ceil(65536 / opts.request.length) * opts.request.length);
  for (let i = 0; i < chunk.length; i += opts.request.length) chunk.set(opts.request, i);
  const fds: number[] = [];
  const offsets: number[] = [];
  for (let i = 0; i < opts.clients; i++) {
    const { fd } = connectTcp("127.0.0.1", opts.port);
    if (opts.receiveBuffer) setIntOption(fd, SOL_SOCKET, SO_RCVBUF, opts.receiveBuffer);
    fds.push(fd);
    offsets.push(0);
  }
  await sleep(50); // connects complete
  const deadline = performance.now() + (opts.maxMs ?? 30_000);
  const quietRounds = opts.quietRounds ?? 10;
  let bytesSent = 0;
  let quiet = 0;
  let rounds = 0;
  while (quiet < quietRounds && performance.now() < deadline) {
    rounds++;
    let moved = 0;
    for (let i = 0; i < fds.length; i++) {
      for (;;) {
        // Whole requests only, so the server never sees a torn one at the end.
        const off = offsets[i];
        const n = send(
          fds[i],
          off === 0 ? chunk : chunk.subarray(off),
          chunk.length - off,
          MSG_DONTWAIT | MSG_NOSIGNAL,
        );
        if (n > 0) {
          moved += n;
          offsets[i] = (off + n) % chunk.length;
          continue;
        }
        if (n < 0 && errno() !== EAGAIN) {
          throw new Error(`client ${i}: send failed, errno ${errno()}`);
        }
        break;
      }
    }
    bytesSent += moved;
    quiet = moved === 0 ? quiet + 1 : 0;
    await sleep(moved === 0 ? 50 : 5);
  }
  return {
    bytesSent,
    rounds,
    settled: quiet >= quietRounds,
    close: () => fds.forEach((fd) => close(fd)),
  };
}
