/**
 * The one place that calls `Deno.dlopen`: libc's socket, epoll, poll, select
 * and rlimit calls, bound once and exported as plain functions.
 *
 * Types are chosen for V8's fast API calls, because these functions run for
 * every event:
 *
 * - Only i32/u32/pointer/buffer parameters. A `usize`/`u64` parameter given a
 *   JS number deopts the fast call on every call (measured: 73,400 deopts in
 *   5 s, the server ran 3x slower), and BigInt would allocate per call.
 * - Lengths (`size_t`, `nfds_t`) are declared `u32`. The x86_64 SysV and
 *   AAPCS64 ABIs do not promise anything about the upper 32 bits of a 32-bit
 *   argument register, but every 32-bit register write on both architectures
 *   zero-extends (`mov r32` on x86_64, a `w` register on aarch64), and that is
 *   how V8 and Deno's trampolines materialise u32 values. We never pass a
 *   length of 2^31 or more, so even a sign-extending path would read the same
 *   value. `tests/syscalls_test.ts` checks lengths arrive intact.
 * - `ssize_t` results are declared `i32`: the low half of the return register
 *   is the whole value for every length below 2^31, and -1 stays -1.
 *
 * errno is read through the address `__errno_location()` returns for the
 * main thread, viewed as an `Int32Array` once, so reading it is a plain
 * memory load right after the failed call.
 *
 * @module
 */

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  // The same calls taking a raw pointer: for long-lived buffers whose address
  // is taken once (`Deno.UnsafePointer.of` at set-up). A pointer argument costs
  // ~7 ns in a fast call, a typed-array argument ~20 ns (measured here).
  recv_ptr: { name: "recv", parameters: ["i32", "pointer", "u32", "i32"], result: "i32" },
  send_ptr: { name: "send", parameters: ["i32", "pointer", "u32", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  // fcntl is variadic; on x86_64 and aarch64 Linux an int passed as the third
  // argument lands where va_arg reads it, so a fixed three-int signature works.
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  // The original call: its size argument is ignored since Linux 2.6.8 (it only has
  // to be > 0). The reactor uses epoll_create1; experiments show the old one.
  epoll_create: { parameters: ["i32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  // The same call on Deno's blocking thread pool: the reactor parks here when
  // idle so Deno's own loop (timers, signals, promises) keeps running.
  epoll_wait_blocking: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  // Batched waits on epoll, poll and select sleep a few µs on the JS thread.
  nanosleep: { parameters: ["buffer", "pointer"], result: "i32" },
  // Set up once (timer slack): the u64s are off the hot path.
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  poll: { parameters: ["buffer", "u32", "i32"], result: "i32" },
  poll_blocking: {
    name: "poll",
    parameters: ["buffer", "u32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  select: { parameters: ["i32", "buffer", "buffer", "buffer", "buffer"], result: "i32" },
  select_blocking: {
    name: "select",
    parameters: ["i32", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  // Files, for static serving (syscalls/files.ts). open is variadic like fcntl:
  // the mode lands where va_arg reads it with a fixed three-int signature.
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  // openat2(2) has no glibc wrapper: syscall(SYS_openat2, dirfd, path, how,
  // size). syscall() reads each argument as a long; every value passed here
  // is a non-negative i32/u32, which both ABIs hand over zero-extended.
  syscall_openat2: {
    name: "syscall",
    parameters: ["i32", "i32", "buffer", "buffer", "u32"],
    result: "i32",
  },
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  // getdents64 (glibc 2.30+): a directory's entries from an fd we opened, so a
  // listing needs no path (and no Deno read permission on /proc).
  getdents64: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // sendfile(out_fd, in_fd, off_t *offset, count): the offset cell is a
  // long-lived 8-byte buffer whose address is taken once (pointer, not buffer).
  sendfile: { parameters: ["i32", "i32", "pointer", "u32"], result: "i32" },
  // io_uring through syscall(2), for syscalls/io_uring.ts (which says why
  // these types: (nr, fd, to_submit, min_complete, flags, argp, argsz) for
  // enter, the two 64-bit ones passed as pointers).
  io_uring_setup: { name: "syscall", parameters: ["i32", "u32", "buffer"], result: "i32" },
  io_uring_enter: {
    name: "syscall",
    parameters: ["i32", "i32", "u32", "u32", "u32", "pointer", "pointer"],
    result: "i32",
  },
  // The same call on Deno's blocking pool: the parked wait of a ring without DEFER_TASKRUN.
  io_uring_enter_blocking: {
    name: "syscall",
    parameters: ["i32", "i32", "u32", "u32", "u32", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  io_uring_register: {
    name: "syscall",
    parameters: ["i32", "i32", "u32", "buffer", "u32"],
    result: "i32",
  },
  // Set-up only (the rings, the buffer ring), so usize/i64 parameters are fine here.
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  getpid: { parameters: [], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  // The same call on a Deno pool thread: returns that thread's errno address
  // (errno is thread-local), for experiments that show it.
  __errno_location_blocking: {
    name: "__errno_location",
    parameters: [],
    result: "pointer",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Which libc to open: `REACTOR_LIBC` if set (and readable), else glibc's soname. */
function libcPath(): string {
  try {
    return Deno.env.get("REACTOR_LIBC") || "libc.so.6";
  } catch {
    return "libc.so.6"; // no --allow-env: the default
  }
}

/**
 * Opens libc, or explains why it cannot. Importing this module never throws:
 * on another OS, or a Linux without glibc, every binding throws `LIBC_ERROR`
 * when called, so a command line can still parse flags, print --help and
 * fail with one clear line (main.ts checks `LIBC_ERROR` first).
 */
function openLibc(): { symbols: Symbols; error: string | null } {
  let error: string;
  if (Deno.build.os !== "linux") {
    error = `reactor needs Linux (epoll); this is ${Deno.build.os}`;
  } else {
    const path = libcPath();
    try {
      return { symbols: Deno.dlopen(path, SYMBOLS).symbols, error: null };
    } catch (e) {
      error = `cannot open libc (${path}): ${(e as Error).message}`;
    }
  }
  const unavailable = () => {
    throw new Error(error);
  };
  const symbols = Object.fromEntries(Object.keys(SYMBOLS).map((k) => [k, unavailable]));
  return { symbols: symbols as unknown as Symbols, error };
}

const libc = openLibc();

/** Why libc could not be opened (another OS, no glibc), or null when it is bound. */
export const LIBC_ERROR: string | null = libc.error;

/** The bound libc functions. Destructure what you need once, at module scope. */
export const {
  socket,
  socketpair,
  setsockopt,
  getsockopt,
  bind,
  listen,
  accept4,
  connect,
  getsockname,
  getpeername,
  recv,
  send,
  recv_ptr,
  send_ptr,
  read,
  write,
  close,
  shutdown,
  fcntl,
  pipe2,
  eventfd,
  epoll_create1,
  epoll_ctl,
  epoll_wait,
  epoll_wait_blocking,
  nanosleep,
  prctl,
  poll,
  poll_blocking,
  select,
  select_blocking,
  open,
  syscall_openat2,
  statx,
  getdents64,
  sendfile,
  io_uring_setup,
  io_uring_enter,
  io_uring_enter_blocking,
  io_uring_register,
  mmap,
  munmap,
  getrlimit,
  setrlimit,
  getpid,
  dup2,
  epoll_create,
  __errno_location,
  __errno_location_blocking,
} = libc.symbols;

const errnoCell = LIBC_ERROR === null ? errnoView() : new Int32Array(1);

function errnoView(): Int32Array {
  const address = libc.symbols.__errno_location();
  if (address === null) throw new Error("__errno_location returned NULL");
  return new Int32Array(Deno.UnsafePointerView.getArrayBuffer(address, 4));
}

/**
 * errno of the main thread. Read it right after a call returned -1, before
 * anything else can make a call that overwrites it.
 */
export function errno(): number {
  return errnoCell[0];
}

/**
 * `struct timespec` for `sleepMicros`: two 64-bit words (tv_sec, tv_nsec) on
 * x86_64 and aarch64, both little-endian, so the low half of tv_nsec is u32
 * word 2. tv_sec and the high halves stay 0.
 */
const napTimespec = new Uint32Array(4);

/**
 * Sleeps the calling thread for `us` microseconds (0 < us < 1,000,000) with
 * nanosleep(2). A signal may end it early, which is harmless to every caller
 * here (they sleep to let events gather, not to keep a deadline).
 */
export function sleepMicros(us: number): void {
  napTimespec[2] = us * 1000;
  nanosleep(napTimespec, null);
}

const PR_SET_TIMERSLACK = 29;
const PR_GET_TIMERSLACK = 30;

/**
 * The calling thread's timer slack, in ns: how much later than asked the
 * kernel may end its sleeps and timed waits, to group wake-ups (50 µs by
 * default).
 */
export function timerSlackNs(): number {
  return prctl(PR_GET_TIMERSLACK, 0n, 0n, 0n, 0n);
}

/** Sets the calling thread's timer slack to `ns` (>= 1; 0 would mean the default). Returns 0 or -errno. */
export function setTimerSlackNs(ns: number): number {
  if (!Number.isInteger(ns) || ns < 1) throw new RangeError(`timer slack must be >= 1 ns: ${ns}`);
  return prctl(PR_SET_TIMERSLACK, BigInt(ns), 0n, 0n, 0n) < 0 ? -errno() : 0;
}
