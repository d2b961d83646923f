/**
 * The experiments' client processes, on raw libc sockets through FFI (no Deno resources, no
 * promises per request), so that the load and the idle connections come from processes other
 * than the server's and cost as little as possible.
 *
 *   deno run -A bench/experiments/clients.ts load --port P [--connections 50] [--size 64]
 *   deno run -A bench/experiments/clients.ts hold --port P --count 9000
 *
 * `load`: `--connections` echo ping-pong clients. Each sends `--size` bytes, waits until the
 * same number of bytes came back, and sends again (one request in flight per connection). The
 * client's own loop is a level-triggered epoll loop with a 1024-event array.
 *
 * `hold`: opens `--count` connections and never sends a byte on them.
 *
 * Both print JSON lines on stdout: one when ready (`{"type":"ready",...}`), then one per
 * SIGUSR2 (`load`: cumulative requests and bytes; `hold`: how many connections are still
 * open, checked with recv(MSG_PEEK|MSG_DONTWAIT)). SIGTERM/SIGINT end them; every socket has
 * SO_LINGER {1,0}, so closing resets it and no TIME_WAIT is left on either side. They stop by
 * themselves after `--max-seconds` (default 600).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { numberFlag } from "../lib/flags.ts";
import { setImmediate } from "node:timers";
import {
  close,
  connectMany,
  EAGAIN,
  ECONNRESET,
  EINTR,
  Epoll,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  errno,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  MSG_PEEK,
  recv,
  send,
} from "./ffi.ts";

const encoder = new TextEncoder();

function emit(obj: Record<string, unknown>): void {
  Deno.stdout.writeSync(encoder.encode(JSON.stringify(obj) + "\n"));
}

const yieldToDeno = () => new Promise<void>((r) => setImmediate(r));

interface Common {
  host: string;
  port: number;
  maxSeconds: number;
}

async function load(o: Common & { connections: number; size: number }): Promise<void> {
  const { fds, failures } = connectMany(o.host, o.port, o.connections, { noDelay: true });
  const n = fds.length;
  const ep = new Epoll(1024);
  const msg = new Uint8Array(o.size).fill(0x78);
  const rbuf = new Uint8Array(Math.max(65536, o.size));
  const sent = new Int32Array(n);
  const got = new Int32Array(n);
  const since = new Float64Array(n);
  const writing = new Uint8Array(n);
  const open = new Uint8Array(n).fill(1);
  let requests = 0;
  let bytesIn = 0;
  let bytesOut = 0;
  let latencySum = 0;
  let closed = 0;
  let errors = 0;
  let running = true;

  const drop = (i: number) => {
    if (!open[i]) return;
    open[i] = 0;
    closed++;
    ep.remove(fds[i]);
    close(fds[i]);
  };
  /** Sends what is left of connection i's message; arms EPOLLOUT if the socket is full. */
  const push = (i: number) => {
    const fd = fds[i];
    while (sent[i] < o.size) {
      const off = sent[i];
      const r = send(fd, off === 0 ? msg : msg.subarray(off), o.size - off, MSG_NOSIGNAL);
      if (r > 0) {
        sent[i] += r;
        bytesOut += r;
        continue;
      }
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) break;
      errors++;
      drop(i);
      return;
    }
    const want = sent[i] < o.size ? 1 : 0;
    if (want !== writing[i]) {
      writing[i] = want;
      ep.modify(fd, EPOLLIN | (want ? EPOLLOUT : 0), i);
    }
  };
  const start = (i: number, now: number) => {
    sent[i] = 0;
    got[i] = 0;
    since[i] = now;
    push(i);
  };

  for (let i = 0; i < n; i++) ep.add(fds[i], EPOLLIN, i);
  const stop = () => running = false;
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGUSR2", () =>
    emit({
      type: "snapshot",
      t: performance.now(),
      requests,
      bytesIn,
      bytesOut,
      latencySumMs: latencySum,
      open: n - closed,
      closed,
      errors,
    }));
  emit({ type: "ready", connections: n, failures });
  const t0 = performance.now();
  for (let i = 0; i < n; i++) start(i, t0);
  let slice = t0;
  while (running) {
    const k = ep.wait(10);
    const now = performance.now();
    for (let j = 0; j < k; j++) {
      const i = ep.id(j);
      if (!open[i]) continue;
      const ev = ep.events(j);
      if ((ev & EPOLLOUT) !== 0) push(i);
      if (!open[i] || (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) === 0) continue;
      const r = recv(fds[i], rbuf, rbuf.length, 0);
      if (r > 0) {
        got[i] += r;
        bytesIn += r;
        if (got[i] >= o.size && sent[i] >= o.size) {
          requests++;
          latencySum += now - since[i];
          start(i, now);
        }
      } else if (r === 0) {
        drop(i);
      } else {
        const e = errno();
        if (e !== EAGAIN && e !== EINTR) {
          errors++;
          drop(i);
        }
      }
    }
    if (now - slice >= 20) {
      if (now - t0 > o.maxSeconds * 1000) break;
      await yieldToDeno();
      slice = performance.now();
    }
    if (closed === n) break;
  }
  for (let i = 0; i < n; i++) if (open[i]) close(fds[i]);
  ep.close();
  emit({ type: "end", requests, closed, errors });
  Deno.exit(0);
}

function hold(o: Common & { count: number }): void {
  const t0 = Date.now();
  const { fds, failures } = connectMany(o.host, o.port, o.count);
  const peek = new Uint8Array(1);
  emit({ type: "ready", held: fds.length, failures, ms: Date.now() - t0 });
  const check = () => {
    let alive = 0;
    let eof = 0;
    let reset = 0;
    let other = 0;
    for (const fd of fds) {
      const r = recv(fd, peek, 1, MSG_PEEK | MSG_DONTWAIT);
      if (r > 0) alive++; // the server sent something: still open
      else if (r === 0) eof++;
      else {
        const e = errno();
        if (e === EAGAIN) alive++;
        else if (e === ECONNRESET) reset++;
        else other++;
      }
    }
    emit({ type: "alive", held: fds.length, alive, eof, reset, other });
  };
  const bye = () => {
    for (const fd of fds) close(fd);
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGUSR2", check);
  Deno.addSignalListener("SIGTERM", bye);
  Deno.addSignalListener("SIGINT", bye);
  setTimeout(bye, o.maxSeconds * 1000);
}

if (import.meta.main) {
  const [cmd, ...rest] = Deno.args;
  const { values: v } = parseArgs({
    args: rest,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      connections: { type: "string", default: "50" },
      size: { type: "string", default: "64" },
      count: { type: "string", default: "1000" },
      "max-seconds": { type: "string", default: "600" },
    },
    strict: true,
  });
  if (!v.port) {
    console.error("usage: clients.ts load|hold --port P [options] (see the module doc)");
    Deno.exit(2);
  }
  const whole = { min: 1, integer: true };
  const common = {
    host: v.host!,
    port: numberFlag("clients", "port", v.port, whole),
    maxSeconds: numberFlag("clients", "max-seconds", v["max-seconds"]!, { min: 1 }),
  };
  if (cmd === "load") {
    const connections = numberFlag("clients", "connections", v.connections!, whole);
    await load({ ...common, connections, size: numberFlag("clients", "size", v.size!, whole) });
  } else if (cmd === "hold") {
    hold({ ...common, count: numberFlag("clients", "count", v.count!, whole) });
  } else {
    console.error(`unknown command ${cmd}: load or hold`);
    Deno.exit(2);
  }
}
