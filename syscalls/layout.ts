/**
 * Byte layouts of the C structs we exchange with the kernel, per architecture.
 *
 * @module
 */

import { AF_INET, AF_INET6 } from "./constants.ts";

/**
 * `struct epoll_event { uint32_t events; epoll_data_t data; }`.
 * glibc declares it `__EPOLL_PACKED` on x86_64 only: there it is 12 bytes
 * with `data` at offset 4; on aarch64 it is naturally aligned, 16 bytes with
 * `data` at offset 8. Both offsets are multiples of 4, so one `Uint32Array`
 * view reads every field on both.
 */
export interface EpollEventLayout {
  /** sizeof(struct epoll_event). */
  readonly size: number;
  /** Offset of `data` in bytes. */
  readonly dataOffset: number;
}

/** The epoll_event layout for an architecture (`Deno.build.arch` by default). */
export function epollEventLayout(arch: string = Deno.build.arch): EpollEventLayout {
  switch (arch) {
    case "x86_64":
      return { size: 12, dataOffset: 4 };
    case "aarch64":
      return { size: 16, dataOffset: 8 };
    default:
      throw new Error(`unsupported architecture ${arch}: epoll_event layout unknown`);
  }
}

/** `struct pollfd { int fd; short events; short revents; }`: 8 bytes on every arch. */
export const POLLFD_SIZE = 8;
/** `fd_set`: 1024 bits as 16 longs; fd N is bit N%64 of long N/64, i.e. byte N>>3, bit N&7. */
export const FD_SET_BYTES = 128;
/** `struct timeval { time_t tv_sec; suseconds_t tv_usec; }` on 64-bit Linux. */
export const TIMEVAL_SIZE = 16;
/** sizeof(struct sockaddr_in). */
export const SOCKADDR_IN_SIZE = 16;
/** sizeof(struct sockaddr_in6). */
export const SOCKADDR_IN6_SIZE = 28;
/** Enough room for any address we decode. */
export const SOCKADDR_STORAGE_SIZE = 128;

/** A parsed IP address: the family and the bytes in network order. */
export interface IpAddress {
  family: typeof AF_INET | typeof AF_INET6;
  bytes: Uint8Array;
}

/** Parses a dotted IPv4 address; null when it is not one. */
export function parseIPv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^\d{1,3}$/.test(parts[i])) return null;
    const v = Number(parts[i]);
    if (v > 255) return null;
    out[i] = v;
  }
  return out;
}

/** Parses an IPv6 address (with `::` and an optional trailing dotted IPv4); null when invalid. */
export function parseIPv6(text: string): Uint8Array | null {
  let s = text;
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  if (s.includes("%")) return null; // zone ids are not supported for listening
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (i === items.length - 1 && item.includes(".")) {
        const v4 = parseIPv4(item);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(item)) return null;
        out.push(parseInt(item, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...new Array(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = all[i] >> 8;
    out[2 * i + 1] = all[i] & 0xff;
  }
  return out;
}

/** Parses a host given on the command line: IPv4, IPv6 or `localhost`. */
export function parseHost(host: string): IpAddress | null {
  if (host === "localhost") return { family: AF_INET, bytes: new Uint8Array([127, 0, 0, 1]) };
  const v4 = parseIPv4(host);
  if (v4) return { family: AF_INET, bytes: v4 };
  const v6 = parseIPv6(host);
  if (v6) return { family: AF_INET6, bytes: v6 };
  return null;
}

/** Encodes `struct sockaddr_in` or `sockaddr_in6` for bind/connect. */
export function encodeSockaddr(addr: IpAddress, port: number): Uint8Array {
  if (addr.family === AF_INET) {
    const b = new Uint8Array(SOCKADDR_IN_SIZE);
    const v = new DataView(b.buffer);
    v.setUint16(0, AF_INET, true); // sa_family_t is host order
    v.setUint16(2, port, false); // the port is network order
    b.set(addr.bytes, 4);
    return b;
  }
  const b = new Uint8Array(SOCKADDR_IN6_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(0, AF_INET6, true);
  v.setUint16(2, port, false);
  b.set(addr.bytes, 8); // after sin6_flowinfo; sin6_scope_id stays 0
  return b;
}

/** Decodes a sockaddr filled by the kernel into a printable host and port. */
export function decodeSockaddr(b: Uint8Array): { host: string; port: number; family: number } {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const family = v.getUint16(0, true);
  const port = v.getUint16(2, false);
  if (family === AF_INET) {
    return { family, port, host: Array.from(b.subarray(4, 8)).join(".") };
  }
  if (family === AF_INET6) {
    const groups: string[] = [];
    for (let i = 0; i < 8; i++) groups.push(v.getUint16(8 + 2 * i, false).toString(16));
    return { family, port, host: groups.join(":").replace(/(^|:)0(:0)+(:|$)/, "::") };
  }
  return { family, port: 0, host: `family ${family}` };
}

/**
 * io_uring's shared structs (`<linux/io_uring.h>`). Every field is a
 * fixed-width integer at its natural alignment, so x86_64 and aarch64 (and
 * every 64-bit Linux) share one layout; `ioUringLayout` still takes the arch
 * so an unknown one fails loudly rather than guessing. Offsets are in bytes;
 * the ring offsets themselves (`sq_off`, `cq_off`) are not here: the kernel
 * fills them in `io_uring_params` and we read them from there.
 */
export interface IoUringLayout {
  /** sizeof(struct io_uring_params). */
  readonly paramsSize: number;
  /** `io_uring_params` fields: sq_entries, cq_entries, flags, features, sq_off, cq_off. */
  readonly params: {
    readonly sqEntries: number;
    readonly cqEntries: number;
    readonly flags: number;
    readonly features: number;
    readonly sqOff: number;
    readonly cqOff: number;
  };
  /** `io_sqring_offsets`, relative to `params.sqOff`: head, tail, ring_mask, ring_entries, flags, dropped, array. */
  readonly sqOff: {
    readonly head: number;
    readonly tail: number;
    readonly ringMask: number;
    readonly ringEntries: number;
    readonly flags: number;
    readonly dropped: number;
    readonly array: number;
  };
  /** `io_cqring_offsets`, relative to `params.cqOff`: head, tail, ring_mask, ring_entries, overflow, cqes, flags. */
  readonly cqOff: {
    readonly head: number;
    readonly tail: number;
    readonly ringMask: number;
    readonly ringEntries: number;
    readonly overflow: number;
    readonly cqes: number;
    readonly flags: number;
  };
  /** sizeof(struct io_uring_sqe) without IORING_SETUP_SQE128. */
  readonly sqeSize: number;
  /** `io_uring_sqe` fields. */
  readonly sqe: {
    readonly opcode: number; // u8
    readonly flags: number; // u8
    readonly ioprio: number; // u16
    readonly fd: number; // i32
    readonly off: number; // u64 (addr2)
    readonly addr: number; // u64
    readonly len: number; // u32
    readonly opFlags: number; // u32 (poll32_events, msg_flags, accept_flags, ...)
    readonly userData: number; // u64
    readonly bufIndex: number; // u16 (buf_group)
    readonly personality: number; // u16
    readonly fileIndex: number; // i32 (splice_fd_in)
  };
  /** sizeof(struct io_uring_cqe) without IORING_SETUP_CQE32. */
  readonly cqeSize: number;
  /** `io_uring_cqe` fields: user_data u64, res i32, flags u32. */
  readonly cqe: { readonly userData: number; readonly res: number; readonly flags: number };
  /** `struct io_uring_getevents_arg { u64 sigmask; u32 sigmask_sz; u32 min_wait_usec; u64 ts; }`. */
  readonly geteventsArgSize: number;
  /** Offset of `min_wait_usec` in it (6.12; padding before). */
  readonly geteventsMinWait: number;
  /** Offset of `ts` (a pointer to a `__kernel_timespec`) in it. */
  readonly geteventsTs: number;
  /** `struct __kernel_timespec { i64 tv_sec; i64 tv_nsec; }`. */
  readonly timespecSize: number;
  /** `struct io_uring_buf { u64 addr; u32 len; u16 bid; u16 resv; }`; entry 0's `resv` is the ring's tail. */
  readonly bufSize: number;
  /** `io_uring_buf` fields, and `tail`: the offset of entry 0's `resv` (`io_uring_buf_ring.tail`). */
  readonly buf: {
    readonly addr: number; // u64
    readonly len: number; // u32
    readonly bid: number; // u16
    readonly tail: number; // u16
  };
  /** `struct io_uring_buf_reg { u64 ring_addr; u32 ring_entries; u16 bgid; u16 flags; u64 resv[3]; }`. */
  readonly bufRegSize: number;
  /** `io_uring_buf_reg` fields. */
  readonly bufReg: {
    readonly ringAddr: number; // u64
    readonly ringEntries: number; // u32
    readonly bgid: number; // u16
  };
  /** `struct io_uring_probe`'s header (last_op u8, ops_len u8, resv u16, resv2 u32[3]). */
  readonly probeHeaderSize: number;
  /** `struct io_uring_probe_op { u8 op; u8 resv; u16 flags; u32 resv2; }`. */
  readonly probeOpSize: number;
}

const IO_URING_LAYOUT: IoUringLayout = {
  paramsSize: 120,
  params: { sqEntries: 0, cqEntries: 4, flags: 8, features: 20, sqOff: 40, cqOff: 80 },
  sqOff: { head: 0, tail: 4, ringMask: 8, ringEntries: 12, flags: 16, dropped: 20, array: 24 },
  cqOff: { head: 0, tail: 4, ringMask: 8, ringEntries: 12, overflow: 16, cqes: 20, flags: 24 },
  sqeSize: 64,
  sqe: {
    opcode: 0,
    flags: 1,
    ioprio: 2,
    fd: 4,
    off: 8,
    addr: 16,
    len: 24,
    opFlags: 28,
    userData: 32,
    bufIndex: 40,
    personality: 42,
    fileIndex: 44,
  },
  cqeSize: 16,
  cqe: { userData: 0, res: 8, flags: 12 },
  geteventsArgSize: 24,
  geteventsMinWait: 12,
  geteventsTs: 16,
  timespecSize: 16,
  bufSize: 16,
  buf: { addr: 0, len: 8, bid: 12, tail: 14 },
  bufRegSize: 40,
  bufReg: { ringAddr: 0, ringEntries: 8, bgid: 12 },
  probeHeaderSize: 16,
  probeOpSize: 8,
};

/** The io_uring struct layout for an architecture (`Deno.build.arch` by default). */
export function ioUringLayout(arch: string = Deno.build.arch): IoUringLayout {
  if (arch === "x86_64" || arch === "aarch64") return IO_URING_LAYOUT;
  throw new Error(`unsupported architecture ${arch}: io_uring layout unknown`);
}
