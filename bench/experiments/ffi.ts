/**
 * The few libc calls the experiment clients need, bound on their own so the load generator
 * shares no code with the server it measures. Linux on x86_64 or aarch64 only.
 *
 * @module
 */

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

const lib = Deno.dlopen("libc.so.6", SYMBOLS);

/** The bound calls. */
export const { socket, connect, setsockopt, getsockopt, recv, send, close, epoll_create1 } =
  lib.symbols;
const { epoll_ctl, epoll_wait } = lib.symbols;

const errnoPtr = lib.symbols.__errno_location();
if (errnoPtr === null) throw new Error("__errno_location returned NULL");
const errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(errnoPtr, 4));

/** errno of the main thread: read it right after a call returned -1. */
export function errno(): number {
  return errnoCell[0];
}

export const AF_INET = 2;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0x800;
export const SOCK_CLOEXEC = 0x80000;
export const SOL_SOCKET = 1;
export const SO_ERROR = 4;
export const SO_LINGER = 13;
export const IPPROTO_TCP = 6;
export const TCP_NODELAY = 1;
export const MSG_PEEK = 0x2;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const EINTR = 4;
export const EAGAIN = 11;
export const ECONNRESET = 104;
export const EINPROGRESS = 115;
export const EPOLLIN = 0x1;
export const EPOLLOUT = 0x4;
export const EPOLLERR = 0x8;
export const EPOLLHUP = 0x10;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;

/** `struct sockaddr_in` for 127.0.0.1-style dotted IPv4 addresses. */
export function sockaddrIn(host: string, port: number): Uint8Array {
  const sa = new Uint8Array(16);
  const v = new DataView(sa.buffer);
  v.setUint16(0, AF_INET, true);
  v.setUint16(2, port, false);
  host.split(".").forEach((p, i) => sa[2 + 2 + i] = Number(p));
  return sa;
}

const intBuf = new Int32Array(2);
const intBytes = new Uint8Array(intBuf.buffer);

/** `setsockopt` with an int value; returns the raw result. */
export function setIntOption(fd: number, level: number, name: number, value: number): number {
  intBuf[0] = value;
  return setsockopt(fd, level, name, intBytes, 4);
}

/** SO_LINGER {on, 0}: close() sends RST, so neither end is left in TIME_WAIT. */
export function setAbortiveClose(fd: number): number {
  intBuf[0] = 1;
  intBuf[1] = 0;
  return setsockopt(fd, SOL_SOCKET, SO_LINGER, intBytes, 8);
}

/** getsockopt(SO_ERROR): the result of a nonblocking connect. */
export function socketError(fd: number): number {
  const len = new Uint32Array([4]);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, intBytes, new Uint8Array(len.buffer)) < 0) {
    return errno();
  }
  return intBuf[0];
}

/** An epoll instance with one results array; event data is a 32-bit id. */
export class Epoll {
  readonly fd: number;
  readonly max: number;
  readonly #events: Uint8Array;
  readonly #words: Uint32Array;
  readonly #stride: number;
  readonly #data: number;
  readonly #ctl: Uint8Array;
  readonly #ctlWords: Uint32Array;

  constructor(max = 1024) {
    const [size, dataOffset] = Deno.build.arch === "aarch64" ? [16, 8] : [12, 4];
    this.fd = epoll_create1(0x80000);
    if (this.fd < 0) throw new Error(`epoll_create1: errno ${errno()}`);
    this.max = max;
    this.#events = new Uint8Array(size * max);
    this.#words = new Uint32Array(this.#events.buffer);
    this.#stride = size >> 2;
    this.#data = dataOffset >> 2;
    this.#ctl = new Uint8Array(size);
    this.#ctlWords = new Uint32Array(this.#ctl.buffer);
  }

  #call(op: number, fd: number, events: number, id: number): void {
    this.#ctlWords[0] = events >>> 0;
    this.#ctlWords[this.#data] = id;
    this.#ctlWords[this.#data + 1] = 0;
    if (epoll_ctl(this.fd, op, fd, this.#ctl) < 0) {
      throw new Error(`epoll_ctl(${op}, fd ${fd}): errno ${errno()}`);
    }
  }

  add(fd: number, events: number, id: number): void {
    this.#call(EPOLL_CTL_ADD, fd, events, id);
  }

  modify(fd: number, events: number, id: number): void {
    this.#call(EPOLL_CTL_MOD, fd, events, id);
  }

  remove(fd: number): void {
    this.#call(EPOLL_CTL_DEL, fd, 0, 0);
  }

  /** epoll_wait on this thread; EINTR counts as 0. */
  wait(timeoutMs: number): number {
    const n = epoll_wait(this.fd, this.#events, this.max, timeoutMs);
    if (n < 0 && errno() !== EINTR) throw new Error(`epoll_wait: errno ${errno()}`);
    return n < 0 ? 0 : n;
  }

  id(i: number): number {
    return this.#words[i * this.#stride + this.#data];
  }

  events(i: number): number {
    return this.#words[i * this.#stride];
  }

  close(): void {
    close(this.fd);
  }
}

/**
 * Opens `count` nonblocking TCP connections to host:port, `batch` at a time (each batch is
 * complete before the next starts, so the server's accept queue never overflows). Every socket
 * gets SO_LINGER {1, 0}. Returns the connected fds and the failures by errno.
 */
export function connectMany(
  host: string,
  port: number,
  count: number,
  opts: { batch?: number; timeoutMs?: number; noDelay?: boolean } = {},
): { fds: number[]; failures: Record<number, number> } {
  const sa = sockaddrIn(host, port);
  const ep = new Epoll(1024);
  const fds: number[] = [];
  const failures: Record<number, number> = {};
  const fail = (e: number) => failures[e] = (failures[e] ?? 0) + 1;
  const batch = opts.batch ?? 256;
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  try {
    for (let done = 0; done < count;) {
      const want = Math.min(batch, count - done);
      const pending = new Map<number, number>();
      for (let i = 0; i < want; i++) {
        const fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
          fail(errno());
          continue;
        }
        setAbortiveClose(fd);
        if (opts.noDelay) setIntOption(fd, IPPROTO_TCP, TCP_NODELAY, 1);
        const r = connect(fd, sa, sa.length);
        if (r === 0) {
          fds.push(fd);
          continue;
        }
        const e = errno();
        if (e !== EINPROGRESS) {
          fail(e);
          close(fd);
          continue;
        }
        ep.add(fd, EPOLLOUT, fd);
        pending.set(fd, fd);
      }
      done += want;
      while (pending.size > 0) {
        if (Date.now() > deadline) {
          for (const fd of pending.keys()) {
            fail(110); // ETIMEDOUT
            close(fd);
          }
          pending.clear();
          break;
        }
        const n = ep.wait(100);
        for (let i = 0; i < n; i++) {
          const fd = ep.id(i);
          if (!pending.delete(fd)) continue;
          ep.remove(fd);
          const e = socketError(fd);
          if (e === 0) fds.push(fd);
          else {
            fail(e);
            close(fd);
          }
        }
      }
    }
  } finally {
    ep.close();
  }
  return { fds, failures };
}
