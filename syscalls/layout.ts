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
