/**
 * Quick checks (under a second) of the seed articles' API claims that are wrong or outdated
 * for today's Linux, run on this machine through FFI:
 *
 * 1. `epoll_create(size)`: size is ignored. `epoll_create(1)` watches 200 ready sockets and
 *    one `epoll_wait(maxevents = 200)` returns all of them.
 * 2. No mmap: creating an epoll instance and waiting on it adds no mapping to
 *    /proc/self/maps; events are copied into the caller's array.
 * 3. Events are not "cleared after firing": level-triggered, an unread fd is reported by every
 *    wait; only EPOLLONESHOT makes it silent until EPOLL_CTL_MOD re-arms it.
 * 4. select's 1024 is glibc's `fd_set` type (FD_SETSIZE, 1024 bits on 64-bit too), not a
 *    kernel limit: with a bigger bitmap the kernel's select() watches fd 1500.
 * 5. errno is thread-local: `__errno_location()` returns another address on another thread.
 *
 *   deno run -A bench/experiments/claims.ts
 *
 * Prints a table and writes docs/experiments/claims.json. The libc functions, constants and
 * struct layouts come from `syscalls/`, like the server's own.
 *
 * @module
 */

import { formatTable } from "../lib/table.ts";
import { header, writeJson } from "./common.ts";
import {
  EPOLL_CTL_ADD,
  EPOLL_CTL_MOD,
  EPOLLIN,
  EPOLLONESHOT,
  FD_SETSIZE,
} from "../../syscalls/constants.ts";
import { errnoName } from "../../syscalls/errno.ts";
import { epollEventLayout, TIMEVAL_SIZE } from "../../syscalls/layout.ts";
import {
  __errno_location,
  __errno_location_blocking,
  close,
  dup2,
  epoll_create,
  epoll_ctl,
  epoll_wait,
  errno,
  select,
  write,
} from "../../syscalls/libc.ts";
import { check, socketPair } from "../../syscalls/socket.ts";

const EV = epollEventLayout();

function ctl(ep: number, op: number, fd: number, events: number): number {
  const ev = new Uint8Array(EV.size);
  const v = new DataView(ev.buffer);
  v.setUint32(0, events, true);
  v.setUint32(EV.dataOffset, fd, true);
  return epoll_ctl(ep, op, fd, ev);
}

const one = new Uint8Array([120]);
const rows: { claim: string; check: string; result: string; holds: boolean }[] = [];

// 1. size ignored
{
  const ep = check("epoll_create", epoll_create(1));
  const fds: number[] = [];
  let added = 0;
  for (let i = 0; i < 200; i++) {
    const [a, b] = socketPair();
    fds.push(a, b);
    write(b, one, 1);
    if (ctl(ep, EPOLL_CTL_ADD, a, EPOLLIN) === 0) added++;
  }
  const events = new Uint8Array(EV.size * 200);
  const n = epoll_wait(ep, events, 200, 100);
  rows.push({
    claim: "maxevents must not exceed epoll_create's size (000)",
    check: "epoll_create(1); add 200 readable sockets; epoll_wait(maxevents 200)",
    result: `${added} added, epoll_wait returned ${n}`,
    holds: n <= 1,
  });
  // 2. no mmap
  const maps = () =>
    Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) => /eventpoll/.test(l))
      .length;
  const ep2 = check("epoll_create", epoll_create(1));
  ctl(ep2, EPOLL_CTL_ADD, fds[0], EPOLLIN);
  const got = epoll_wait(ep2, events, 200, 0);
  const v = new DataView(events.buffer);
  const copied = got === 1 && v.getUint32(EV.dataOffset, true) === fds[0];
  rows.push({
    claim: "epoll shares events with user space through mmap (002, 003)",
    check: "an epoll instance waited on; /proc/self/maps searched for the eventpoll inode",
    result: `${maps()} eventpoll mappings in /proc/self/maps; the event (fd ${fds[0]}) ` +
      `${copied ? "was written into our own array" : "did not arrive"}`,
    holds: maps() > 0,
  });
  close(ep2);
  close(ep);
  for (const fd of fds) close(fd);
}

// 3. not cleared after firing, except ONESHOT
{
  const counts: Record<string, number[]> = {};
  for (
    const [name, bits] of [["level-triggered", EPOLLIN], [
      "EPOLLONESHOT",
      EPOLLIN | EPOLLONESHOT,
    ]] as const
  ) {
    const ep = check("epoll_create", epoll_create(1));
    const [a, b] = socketPair();
    write(b, one, 1);
    ctl(ep, EPOLL_CTL_ADD, a, bits);
    const events = new Uint8Array(EV.size * 4);
    counts[name] = [0, 1, 2].map(() => epoll_wait(ep, events, 4, 0));
    if (bits & EPOLLONESHOT) {
      ctl(ep, EPOLL_CTL_MOD, a, bits); // re-arms
      counts[name].push(epoll_wait(ep, events, 4, 0));
    }
    close(a);
    close(b);
    close(ep);
  }
  rows.push({
    claim: "after an event fires, the fd's events are cleared and need EPOLL_CTL_MOD (000)",
    check: "1 unread byte, three epoll_wait(0) calls; ONESHOT then MOD and a fourth",
    result: `LT: ${counts["level-triggered"].join(", ")}; ONESHOT: ` +
      `${counts["EPOLLONESHOT"].slice(0, 3).join(", ")}, after MOD ${counts["EPOLLONESHOT"][3]}`,
    holds: counts["level-triggered"][1] === 0,
  });
}

// 4. select: glibc's fd_set, not the kernel
{
  const [a, b] = socketPair();
  const high = 1500;
  const dup = dup2(a, high);
  const dupError = dup === high ? "" : `dup2 to fd ${high} failed: ${errnoName(errno())}; `;
  write(b, one, 1);
  // A bitmap of twice glibc's FD_SETSIZE bits (2048), laid out like fd_set: fd N is
  // byte N >> 3, bit N & 7.
  const set = new Uint8Array((2 * FD_SETSIZE) / 8);
  set[high >> 3] |= 1 << (high & 7);
  const tv = new Uint8Array(TIMEVAL_SIZE); // timeval {0, 0}: do not wait
  const n = dup === high ? select(high + 1, set, null, null, tv) : -1;
  const ready = dup === high && (set[high >> 3] & (1 << (high & 7))) !== 0;
  // glibc's own header on this machine, when the dev headers are installed.
  let header = "glibc headers not installed";
  for (const dir of ["x86_64-linux-gnu", "aarch64-linux-gnu"]) {
    try {
      const text = Deno.readTextFileSync(`/usr/include/${dir}/bits/typesizes.h`);
      const m = text.match(/#define\s+__FD_SETSIZE\s+(\d+)/);
      if (m) header = `/usr/include/${dir}/bits/typesizes.h: __FD_SETSIZE ${m[1]}`;
    } catch {
      // not this architecture
    }
  }
  rows.push({
    claim: "select watches 1024 fds on 32-bit and 2048 on 64-bit (002, 003)",
    check: `glibc's FD_SETSIZE on this 64-bit machine; raw select() on fd ${high} with a ` +
      `${set.length}-byte bitmap`,
    result: `${header}; ${dupError}select(${high + 1}, ...) returned ${n}, fd ${high} ` +
      `${ready ? "reported readable" : "not reported"}: 1024 is glibc's fd_set type, the ` +
      "kernel takes any nfds up to the open-files limit",
    holds: false,
  });
  if (dup === high) close(high);
  close(a);
  close(b);
}

// 5. errno per thread
{
  const main = Deno.UnsafePointer.value(__errno_location());
  const pool = Deno.UnsafePointer.value(await __errno_location_blocking());
  rows.push({
    claim: "errno is process-global, so threads cannot help (001)",
    check: "__errno_location() on the JS thread and on a Deno pool thread",
    result: `0x${main.toString(16)} vs 0x${pool.toString(16)}: ` +
      (main !== pool ? "different addresses, errno is thread-local" : "same address"),
    holds: main === pool,
  });
}

console.log(
  formatTable(
    ["seed claim", "holds?", "result on this machine"],
    rows.map((r) => [r.claim, r.holds ? "yes" : "no", r.result]),
    ["left", "left", "left"],
  ),
);
const file = writeJson("claims", {
  ...header("claims", "API claims of the seed articles checked on this machine through FFI."),
  results: rows,
});
console.error(`wrote ${file}`);
