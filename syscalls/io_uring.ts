/**
 * io_uring without liburing: `io_uring_setup`, `io_uring_enter` and
 * `io_uring_register` through libc's `syscall()`, the rings mapped with
 * `mmap` and read and written through typed arrays taken once, and a probe
 * that says whether io_uring works here (and why not).
 *
 * ## The bindings
 * `syscall(long nr, ...)` is variadic; `libc.ts` binds it with a fixed
 * signature per use (`io_uring_setup`, `io_uring_enter`, ...), as it binds
 * `fcntl`. The first argument, the syscall number, is passed as `i32`: a
 * small positive value, which every path writes zero-extended. On x86_64 and aarch64 Linux variadic
 * integer arguments travel exactly like fixed ones. The kernel's
 * `SYSCALL_DEFINE` wrappers truncate each argument to its declared C type
 * (`unsigned int fd`, `u32 to_submit`, ...), so `i32`/`u32` parameters need
 * no clean upper halves. Two arguments are 64-bit and must be whole: the
 * `argp` pointer (declared `pointer`) and `argsz` (`size_t`). On x86_64
 * `argsz` is the seventh argument of `syscall()` and goes on the stack,
 * where nothing promises that a 32-bit value's upper half is clean: it is
 * declared `pointer` too, and passed as a pointer object made once from
 * the constant size. No BigInt, no `usize` given a number, no allocation per
 * call: the fast call does not deopt.
 *
 * ## Memory ordering
 * The rings are shared with the kernel, which may post completions from
 * another CPU while we read (and, with SQPOLL, read submissions while we
 * write; we do not use SQPOLL). liburing uses release stores for the SQ tail
 * and the CQ head and acquire loads for the CQ tail and the SQ head. We use
 * `Atomics.store` / `Atomics.load` on a `Uint32Array` over the mapping
 * (Atomics work on non-shared buffers): they are sequentially consistent,
 * which is stronger than release/acquire. On aarch64 V8 emits `stlr`/`ldar`
 * for them, so the SQE writes are visible before the new tail and the CQE
 * reads cannot move before the tail load or after the head store (the kernel
 * may reuse a slot once the head passes it). On x86_64 (TSO) loads and
 * stores are already ordered; V8 emits a plain load and an `xchg` store.
 * Plain typed-array accesses are used for everything else: the SQEs (ours
 * until the tail is published) and the CQEs (the kernel's until then).
 *
 * @module
 */

import { errnoName, SyscallError } from "./errno.ts";
import { ioUringLayout } from "./layout.ts";
import {
  close,
  errno,
  io_uring_enter,
  io_uring_enter_blocking,
  io_uring_register,
  io_uring_setup,
  LIBC_ERROR,
  mmap,
  munmap,
} from "./libc.ts";

/** `__NR_io_uring_setup` (the same on x86_64 and aarch64, as are the next two). */
export const NR_IO_URING_SETUP = 425;
/** `__NR_io_uring_enter`. */
export const NR_IO_URING_ENTER = 426;
/** `__NR_io_uring_register`. */
export const NR_IO_URING_REGISTER = 427;

// Setup flags (io_uring_params.flags).
/** `IORING_SETUP_CQSIZE`: `cq_entries` is set by us. */
export const IORING_SETUP_CQSIZE = 1 << 3;
/** `IORING_SETUP_SUBMIT_ALL`: keep submitting a batch after one SQE fails. */
export const IORING_SETUP_SUBMIT_ALL = 1 << 7;
/** `IORING_SETUP_SINGLE_ISSUER`: one thread submits (6.0). */
export const IORING_SETUP_SINGLE_ISSUER = 1 << 12;
/** `IORING_SETUP_DEFER_TASKRUN`: completion work runs only inside our `io_uring_enter` (6.1). */
export const IORING_SETUP_DEFER_TASKRUN = 1 << 13;
/** `IORING_SETUP_NO_SQARRAY`: no SQ index array; SQE i is slot i (6.6). */
export const IORING_SETUP_NO_SQARRAY = 1 << 16;

// Features (io_uring_params.features, filled by the kernel).
/** `IORING_FEAT_SINGLE_MMAP`: one mapping holds both rings (5.4). */
export const IORING_FEAT_SINGLE_MMAP = 1 << 0;
/** `IORING_FEAT_NODROP`: completions are never dropped; overflow is kept by the kernel (5.5). */
export const IORING_FEAT_NODROP = 1 << 1;
/** `IORING_FEAT_EXT_ARG`: `io_uring_enter` takes a timeout (5.11). */
export const IORING_FEAT_EXT_ARG = 1 << 8;
/** `IORING_FEAT_MIN_TIMEOUT`: `io_uring_getevents_arg.min_wait_usec` is honoured (6.12). */
export const IORING_FEAT_MIN_TIMEOUT = 1 << 15;

// io_uring_enter flags.
/** `IORING_ENTER_GETEVENTS`: wait for `min_complete` completions (and run completion work). */
export const IORING_ENTER_GETEVENTS = 1 << 0;
/** `IORING_ENTER_EXT_ARG`: `argp` is a `struct io_uring_getevents_arg`. */
export const IORING_ENTER_EXT_ARG = 1 << 3;

// io_uring_register opcodes.
/** `IORING_REGISTER_EVENTFD`: the kernel signals this eventfd when completions are posted. */
export const IORING_REGISTER_EVENTFD = 4;
/** `IORING_REGISTER_PROBE`: which opcodes this kernel knows. */
export const IORING_REGISTER_PROBE = 8;
/** `IORING_REGISTER_PBUF_RING`: a ring of provided buffers (5.19). */
export const IORING_REGISTER_PBUF_RING = 22;

// Opcodes.
/** `IORING_OP_NOP`. */
export const IORING_OP_NOP = 0;
/** `IORING_OP_POLL_ADD`. */
export const IORING_OP_POLL_ADD = 6;
/** `IORING_OP_POLL_REMOVE` (also updates a poll in place). */
export const IORING_OP_POLL_REMOVE = 7;
/** `IORING_OP_ACCEPT`. */
export const IORING_OP_ACCEPT = 13;
/** `IORING_OP_ASYNC_CANCEL`. */
export const IORING_OP_ASYNC_CANCEL = 14;
/** `IORING_OP_SEND`. */
export const IORING_OP_SEND = 26;
/** `IORING_OP_RECV`. */
export const IORING_OP_RECV = 27;

// SQE flags.
/** `IOSQE_BUFFER_SELECT`: take a buffer from the group in `buf_group`. */
export const IOSQE_BUFFER_SELECT = 1 << 5;
/** `IOSQE_CQE_SKIP_SUCCESS`: post no completion when it succeeds. */
export const IOSQE_CQE_SKIP_SUCCESS = 1 << 6;

// Op flags.
/** `IORING_ACCEPT_MULTISHOT` (in `ioprio` of an ACCEPT, 5.19). */
export const IORING_ACCEPT_MULTISHOT = 1 << 0;
/** `IORING_RECV_MULTISHOT` (in `ioprio` of a RECV, 6.0). */
export const IORING_RECV_MULTISHOT = 1 << 1;

// CQE flags.
/** `IORING_CQE_F_BUFFER`: the upper 16 bits of `flags` are the provided buffer's id. */
export const IORING_CQE_F_BUFFER = 1 << 0;
/** `IORING_CQE_F_MORE`: a multishot request stays armed; more completions follow. */
export const IORING_CQE_F_MORE = 1 << 1;
/** `IORING_CQE_BUFFER_SHIFT`. */
export const IORING_CQE_BUFFER_SHIFT = 16;

/** `IORING_CQ_EVENTFD_DISABLED` in the CQ ring's flags. */
export const IORING_CQ_EVENTFD_DISABLED = 1;

/** `IORING_OFF_SQ_RING`: the mmap offset of the SQ ring. */
const OFF_SQ_RING = 0;
/** `IORING_OFF_CQ_RING`. */
const OFF_CQ_RING = 0x8000000;
/** `IORING_OFF_SQES`. */
const OFF_SQES = 0x10000000;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
const MAP_PRIVATE = 2;
const MAP_ANONYMOUS = 0x20;
const MAP_POPULATE = 0x8000;
/** `IO_URING_OP_SUPPORTED` in `io_uring_probe_op.flags`. */
const IO_URING_OP_SUPPORTED = 1;

/** A pointer object whose address is `n`: for 64-bit integer arguments passed as pointers. */
function word(n: number): Deno.PointerObject {
  return Deno.UnsafePointer.create(BigInt(n))!;
}

/** The numeric address of a pointer (user-space addresses fit in 2^53). */
export function addressOf(p: Deno.PointerObject): number {
  return Number(Deno.UnsafePointer.value(p));
}

/**
 * Maps `length` bytes of anonymous, page-aligned memory that stays put until
 * `unmapAnonymous`: for buffers the kernel reads or writes after the call
 * that handed them over returned (provided buffers, sends in flight).
 */
export function mapAnonymous(length: number): { pointer: Deno.PointerObject; bytes: Uint8Array } {
  const p = mmap(null, BigInt(length), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0n);
  if (p === null || Deno.UnsafePointer.value(p) === 0xffffffffffffffffn) {
    throw new SyscallError("mmap", errno(), `${length} anonymous bytes`);
  }
  return { pointer: p, bytes: new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, length)) };
}

/** Unmaps what `mapAnonymous` mapped. */
export function unmapAnonymous(pointer: Deno.PointerObject, length: number): void {
  munmap(pointer, BigInt(length));
}

function mapRing(fd: number, length: number, offset: number): Deno.PointerObject {
  const p = mmap(
    null,
    BigInt(length),
    PROT_READ | PROT_WRITE,
    MAP_SHARED | MAP_POPULATE,
    fd,
    BigInt(offset),
  );
  // MAP_FAILED is (void *)-1.
  if (p === null || Deno.UnsafePointer.value(p) === 0xffffffffffffffffn) {
    throw new SyscallError("mmap", errno(), `io_uring ring at offset ${offset}`);
  }
  return p;
}

/** What `IoUring.setup` is asked for. */
export interface IoUringSetupOptions {
  /** SQ entries (rounded up to a power of two by the kernel). */
  entries: number;
  /** CQ entries; default twice `entries`. */
  cqEntries?: number;
  /** IORING_SETUP_* flags beyond CQSIZE. */
  flags?: number;
}

/**
 * One io_uring instance: its fd, its two rings and its SQE array, mapped
 * once, with typed-array views taken once. This is the raw ring: it queues
 * SQEs, enters the kernel, and exposes the CQ ring for the caller to read.
 * What the requests mean belongs to the caller (`reactor/io_uring.ts`).
 */
export class IoUring {
  /** The ring's fd. */
  readonly fd: number;
  /** The IORING_SETUP_* flags it was made with. */
  readonly flags: number;
  /** IORING_FEAT_* bits the kernel reported. */
  readonly features: number;
  /** SQ size (a power of two). */
  readonly sqEntries: number;
  /** CQ size (a power of two). */
  readonly cqEntries: number;
  /** The SQE array as 32-bit words: SQE `i` is words `16 * i` to `16 * i + 15`. */
  readonly sqeWords: Uint32Array;
  /** The SQE array as bytes (opcode and flags are bytes). */
  readonly sqeBytes: Uint8Array;
  /** The CQ ring as 32-bit words; CQE `i` is words `cqes + 4 * i` .. `+ 3`. */
  readonly cq: Uint32Array;
  /** The same memory as signed words (CQE `res`). */
  readonly cqSigned: Int32Array;
  /** Word index of the first CQE in `cq`. */
  readonly cqes: number;
  /** `cq_entries - 1`. */
  readonly cqMask: number;
  readonly #sq: Uint32Array;
  readonly #sqHead: number;
  readonly #sqTailIndex: number;
  readonly #sqMask: number;
  readonly #cqHead: number;
  readonly #cqTail: number;
  readonly #cqOverflow: number;
  readonly #cqFlags: number;
  /** Our SQ tail: SQEs up to here are written, not necessarily published. */
  #tail = 0;
  readonly #mappings: [Deno.PointerObject, number][] = [];
  /** `min_complete` of a timed `enter` (see `setBatchedWait`). */
  #minComplete = 1;
  /** `struct io_uring_getevents_arg` and the timespec it points at, for timed waits. */
  readonly #timespec: Uint32Array;
  readonly #argPointer: Deno.PointerObject;
  readonly #argSize: Deno.PointerObject;
  readonly #argBuffer: Uint8Array;
  #closed = false;

  private constructor(fd: number, params: Uint8Array, flags: number) {
    const L = ioUringLayout();
    const v = new DataView(params.buffer);
    this.fd = fd;
    this.flags = flags;
    this.sqEntries = v.getUint32(L.params.sqEntries, true);
    this.cqEntries = v.getUint32(L.params.cqEntries, true);
    this.features = v.getUint32(L.params.features, true);
    const sq = (f: number) => v.getUint32(L.params.sqOff + f, true);
    const cq = (f: number) => v.getUint32(L.params.cqOff + f, true);
    const sqRingSize = sq(L.sqOff.array) + this.sqEntries * 4;
    const cqRingSize = cq(L.cqOff.cqes) + this.cqEntries * L.cqeSize;
    const single = (this.features & IORING_FEAT_SINGLE_MMAP) !== 0;
    try {
      const sqSize = single ? Math.max(sqRingSize, cqRingSize) : sqRingSize;
      const sqPtr = mapRing(fd, sqSize, OFF_SQ_RING);
      this.#mappings.push([sqPtr, sqSize]);
      let cqPtr = sqPtr;
      if (!single) {
        cqPtr = mapRing(fd, cqRingSize, OFF_CQ_RING);
        this.#mappings.push([cqPtr, cqRingSize]);
      }
      const sqesSize = this.sqEntries * L.sqeSize;
      const sqesPtr = mapRing(fd, sqesSize, OFF_SQES);
      this.#mappings.push([sqesPtr, sqesSize]);

      this.#sq = new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(sqPtr, sqSize));
      const cqBuffer = Deno.UnsafePointerView.getArrayBuffer(cqPtr, single ? sqSize : cqRingSize);
      this.cq = new Uint32Array(cqBuffer);
      this.cqSigned = new Int32Array(cqBuffer);
      const sqesBuffer = Deno.UnsafePointerView.getArrayBuffer(sqesPtr, sqesSize);
      this.sqeWords = new Uint32Array(sqesBuffer);
      this.sqeBytes = new Uint8Array(sqesBuffer);
    } catch (e) {
      this.#unmap();
      close(fd);
      throw e;
    }
    this.#sqHead = sq(L.sqOff.head) >> 2;
    this.#sqTailIndex = sq(L.sqOff.tail) >> 2;
    this.#sqMask = this.#sq[sq(L.sqOff.ringMask) >> 2];
    this.#cqHead = cq(L.cqOff.head) >> 2;
    this.#cqTail = cq(L.cqOff.tail) >> 2;
    this.#cqOverflow = cq(L.cqOff.overflow) >> 2;
    this.#cqFlags = cq(L.cqOff.flags) >> 2;
    this.cqMask = this.cq[cq(L.cqOff.ringMask) >> 2];
    this.cqes = cq(L.cqOff.cqes) >> 2;
    this.#tail = this.#sq[this.#sqTailIndex];
    if ((flags & IORING_SETUP_NO_SQARRAY) === 0) {
      // SQE i always goes in slot i: the index array is the identity, once.
      const array = sq(L.sqOff.array) >> 2;
      for (let i = 0; i < this.sqEntries; i++) this.#sq[array + i] = i;
    }
    const arg = new Uint8Array(L.geteventsArgSize + L.timespecSize);
    const argPointer = Deno.UnsafePointer.of(arg)!;
    // ts points at the timespec right after the struct; set once.
    new DataView(arg.buffer).setBigUint64(
      L.geteventsTs,
      BigInt(addressOf(argPointer) + L.geteventsArgSize),
      true,
    );
    this.#timespec = new Uint32Array(arg.buffer, L.geteventsArgSize, 4);
    this.#argPointer = argPointer;
    this.#argSize = word(L.geteventsArgSize);
    // Keep `arg` reachable for as long as the ring: its address is in use.
    this.#argBuffer = arg;
  }

  /**
   * Sets up a ring. Fails with a `SyscallError` naming `io_uring_setup`
   * (EPERM: blocked by seccomp or `kernel.io_uring_disabled`; ENOSYS: no
   * io_uring; EINVAL: a flag this kernel does not know).
   */
  static setup(options: IoUringSetupOptions): IoUring {
    const L = ioUringLayout();
    const params = new Uint8Array(L.paramsSize);
    const v = new DataView(params.buffer);
    let flags = options.flags ?? 0;
    const cqEntries = options.cqEntries ?? options.entries * 2;
    flags |= IORING_SETUP_CQSIZE;
    v.setUint32(L.params.flags, flags, true);
    v.setUint32(L.params.cqEntries, cqEntries, true);
    const fd = io_uring_setup(NR_IO_URING_SETUP, options.entries, params);
    if (fd < 0) throw new SyscallError("io_uring_setup", errno());
    return new IoUring(fd, params, flags);
  }

  /** SQEs written and not yet taken by the kernel. */
  get pending(): number {
    return (this.#tail - Atomics.load(this.#sq, this.#sqHead)) >>> 0;
  }

  /**
   * The word index (in `sqeWords`) of the next free SQE, zeroed. When the SQ
   * is full, what is queued is submitted first (one extra `io_uring_enter`).
   */
  sqe(): number {
    const head = Atomics.load(this.#sq, this.#sqHead);
    if (((this.#tail - head) >>> 0) >= this.sqEntries) {
      this.submit();
      if (((this.#tail - Atomics.load(this.#sq, this.#sqHead)) >>> 0) >= this.sqEntries) {
        throw new Error("io_uring: the submission queue stays full");
      }
    }
    const w = (this.#tail & this.#sqMask) << 4;
    this.#tail = (this.#tail + 1) >>> 0;
    this.sqeWords.fill(0, w, w + 16);
    return w;
  }

  /** Publishes the SQEs written so far (release store of the SQ tail). */
  #publish(): number {
    Atomics.store(this.#sq, this.#sqTailIndex, this.#tail);
    return (this.#tail - Atomics.load(this.#sq, this.#sqHead)) >>> 0;
  }

  /**
   * Submits what is queued without waiting. Returns the SQEs taken, or -1
   * with errno set (EBUSY/EAGAIN: the CQ has overflowed, reap first).
   */
  submit(): number {
    const n = this.#publish();
    if (n === 0) return 0;
    return io_uring_enter(NR_IO_URING_ENTER, this.fd, n, 0, 0, null, null);
  }

  /**
   * One `io_uring_enter`: submits what is queued and waits for at least one
   * completion for up to `timeoutMs` (0: do not wait, but still run pending
   * completion work; -1: no time limit). Returns -1 with errno set on
   * failure; EINTR and ETIME (the time ran out) are the caller's "nothing".
   */
  enter(timeoutMs: number): number {
    const n = this.#publish();
    if (timeoutMs === 0) {
      return io_uring_enter(NR_IO_URING_ENTER, this.fd, n, 0, IORING_ENTER_GETEVENTS, null, null);
    }
    if (timeoutMs < 0) {
      return io_uring_enter(NR_IO_URING_ENTER, this.fd, n, 1, IORING_ENTER_GETEVENTS, null, null);
    }
    const ts = this.#timespec;
    ts[0] = (timeoutMs / 1000) >>> 0; // tv_sec (low half; the high half stays 0)
    ts[2] = (timeoutMs % 1000) * 1_000_000; // tv_nsec
    return io_uring_enter(
      NR_IO_URING_ENTER,
      this.fd,
      n,
      this.#minComplete,
      IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
      this.#argPointer,
      this.#argSize,
    );
  }

  /**
   * Makes every timed `enter` a batched wait: it returns once `minComplete`
   * completions are there, or, after `minWaitUs` µs, once there is at least
   * one (the `min_wait_usec` of `io_uring_getevents_arg`, 6.12). With
   * DEFER_TASKRUN the kernel does not even wake the task for fewer. `(1, 0)`
   * turns it off. Needs `IORING_FEAT_MIN_TIMEOUT` in `features`; an older
   * kernel would read the field as padding.
   */
  setBatchedWait(minComplete: number, minWaitUs: number): void {
    if (minWaitUs > 0 && (this.features & IORING_FEAT_MIN_TIMEOUT) === 0) {
      throw new Error("io_uring: this kernel has no min_wait_usec (IORING_FEAT_MIN_TIMEOUT, 6.12)");
    }
    this.#minComplete = minWaitUs > 0 ? minComplete : 1;
    new DataView(this.#argBuffer.buffer).setUint32(
      ioUringLayout().geteventsMinWait,
      minWaitUs,
      true,
    );
  }

  /**
   * `enter(timeoutMs)` with nothing to submit, on Deno's blocking thread
   * pool. Only for rings without DEFER_TASKRUN (which must wait on the
   * submitting thread). Resolves to the call's result (-1 for EINTR, ETIME).
   */
  waitBlocking(timeoutMs: number): Promise<number> {
    if (timeoutMs < 0) {
      return io_uring_enter_blocking(
        NR_IO_URING_ENTER,
        this.fd,
        0,
        1,
        IORING_ENTER_GETEVENTS,
        null,
        null,
      );
    }
    const ts = this.#timespec;
    ts[0] = (timeoutMs / 1000) >>> 0;
    ts[2] = (timeoutMs % 1000) * 1_000_000;
    return io_uring_enter_blocking(
      NR_IO_URING_ENTER,
      this.fd,
      0,
      1,
      IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
      this.#argPointer,
      this.#argSize,
    );
  }

  /** Index of the first unread CQE (our head). */
  get cqHead(): number {
    return this.cq[this.#cqHead];
  }

  /** Index one past the last posted CQE (acquire load of the kernel's tail). */
  cqTail(): number {
    return Atomics.load(this.cq, this.#cqTail);
  }

  /** Gives CQEs up to `head` back to the kernel (release store of our head). */
  cqAdvance(head: number): void {
    Atomics.store(this.cq, this.#cqHead, head);
  }

  /**
   * Turns the eventfd registered with IORING_REGISTER_EVENTFD on or off
   * (`IORING_CQ_EVENTFD_DISABLED` in the CQ ring's flags, read by the kernel
   * each time it would signal it).
   */
  eventfdEnabled(on: boolean): void {
    const flags = this.cq[this.#cqFlags];
    Atomics.store(
      this.cq,
      this.#cqFlags,
      on ? flags & ~IORING_CQ_EVENTFD_DISABLED : flags | IORING_CQ_EVENTFD_DISABLED,
    );
  }

  /** Completions the kernel dropped for lack of room (always 0 with IORING_FEAT_NODROP). */
  get cqOverflow(): number {
    return this.cq[this.#cqOverflow];
  }

  /**
   * `io_uring_register(fd, opcode, arg, nrArgs)`. Returns the call's result,
   * or -1 with errno set.
   */
  register(opcode: number, arg: Uint8Array, nrArgs: number): number {
    return io_uring_register(NR_IO_URING_REGISTER, this.fd, opcode, arg, nrArgs);
  }

  /** Unmaps the rings and closes the fd (every request in flight is cancelled). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unmap();
    close(this.fd);
  }

  #unmap(): void {
    for (const [p, size] of this.#mappings) munmap(p, BigInt(size));
    this.#mappings.length = 0;
  }
}

/** What `probeIoUring` found. */
export interface IoUringProbe {
  /** Whether a ring could be set up with the flags asked for. */
  readonly ok: boolean;
  /** Why not (empty when ok). */
  readonly reason: string;
  /** IORING_FEAT_* bits (0 when not ok). */
  readonly features: number;
  /** Opcodes the kernel supports (IORING_REGISTER_PROBE). */
  readonly ops: ReadonlySet<number>;
  /** Whether SINGLE_ISSUER | DEFER_TASKRUN could be set up. */
  readonly deferTaskrun: boolean;
}

/** The environment variable that turns io_uring off for this process (tests, incidents). */
export const IO_URING_ENV = "REACTOR_IO_URING";

function disabledByEnv(): boolean {
  try {
    const v = Deno.env.get(IO_URING_ENV);
    return v === "off" || v === "0";
  } catch {
    return false; // no --allow-env: not disabled
  }
}

function sysctlDisabled(): string {
  try {
    return Deno.readTextFileSync("/proc/sys/kernel/io_uring_disabled").trim();
  } catch {
    return "";
  }
}

/** A one-line explanation of an `io_uring_setup` failure. */
export function explainSetupFailure(e: unknown): string {
  if (!(e instanceof SyscallError)) return (e as Error).message;
  if (e.code === "EPERM" || e.code === "EACCES") {
    const sysctl = sysctlDisabled();
    if (sysctl === "2") return "io_uring_setup: EPERM (kernel.io_uring_disabled = 2)";
    if (sysctl === "1") {
      return "io_uring_setup: EPERM (kernel.io_uring_disabled = 1: only the io_uring_group may use it)";
    }
    return `io_uring_setup: ${e.code} (blocked, e.g. by a seccomp profile: Docker >= 25 and Kubernetes RuntimeDefault deny io_uring)`;
  }
  if (e.code === "ENOSYS") return "io_uring_setup: ENOSYS (no io_uring in this kernel or sandbox)";
  return e.message;
}

/** The flags the reactor's ring is set up with, when this kernel takes them. */
export const PREFERRED_FLAGS = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
  IORING_SETUP_SUBMIT_ALL;

/**
 * Whether io_uring works in this process, with which features and opcodes;
 * when not, a one-line reason. Sets up (and closes) a small ring.
 * `REACTOR_IO_URING=off` makes it report "disabled" without trying.
 */
export function probeIoUring(): IoUringProbe {
  const none = (reason: string): IoUringProbe => ({
    ok: false,
    reason,
    features: 0,
    ops: new Set(),
    deferTaskrun: false,
  });
  if (Deno.build.os !== "linux") return none(`io_uring needs Linux; this is ${Deno.build.os}`);
  if (LIBC_ERROR !== null) return none(LIBC_ERROR);
  if (disabledByEnv()) return none(`disabled by ${IO_URING_ENV}=off`);
  let ring: IoUring;
  let deferTaskrun = true;
  try {
    ring = IoUring.setup({ entries: 4, flags: PREFERRED_FLAGS });
  } catch (e) {
    if (!(e instanceof SyscallError) || e.code !== "EINVAL") return none(explainSetupFailure(e));
    deferTaskrun = false; // a kernel before 6.1: try without
    try {
      ring = IoUring.setup({ entries: 4 });
    } catch (e2) {
      return none(explainSetupFailure(e2));
    }
  }
  try {
    const L = ioUringLayout();
    const nOps = 256;
    const probe = new Uint8Array(L.probeHeaderSize + nOps * L.probeOpSize);
    const ops = new Set<number>();
    if (ring.register(IORING_REGISTER_PROBE, probe, nOps) < 0) {
      return none(`io_uring_register(PROBE): ${errnoName(errno())}`);
    }
    const opsLen = probe[1];
    for (let i = 0; i < opsLen; i++) {
      const at = L.probeHeaderSize + i * L.probeOpSize;
      if ((probe[at + 2] & IO_URING_OP_SUPPORTED) !== 0) ops.add(probe[at]);
    }
    return { ok: true, reason: "", features: ring.features, ops, deferTaskrun };
  } finally {
    ring.close();
  }
}
