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

// The SQE, CQE and provided-buffer layouts, as indices into typed-array views
// of the field's width (bytes, u16 halves, u32 words), derived once here from
// `ioUringLayout()`: the prep methods below are the only code that knows them.
const LAYOUT = ioUringLayout();
const SQE = LAYOUT.sqe;
/** u32 words per SQE (a power of two), and its log2: SQE `i` starts at word `i << SQE_SHIFT`. */
const SQE_WORDS = LAYOUT.sqeSize >> 2;
const SQE_SHIFT = Math.log2(SQE_WORDS);
/** Byte offsets (in the SQE's first word, at byte `w << 2`). */
const SQE_OPCODE = SQE.opcode;
const SQE_FLAGS = SQE.flags;
/** u16 offsets (at half `w << 1`). */
const SQE_IOPRIO = SQE.ioprio >> 1;
const SQE_BUF_GROUP = SQE.bufIndex >> 1;
/** u32 offsets (at word `w`); 64-bit fields as their low and high words (little-endian). */
const SQE_FD = SQE.fd >> 2;
const SQE_ADDR_LO = SQE.addr >> 2;
const SQE_ADDR_HI = SQE_ADDR_LO + 1;
const SQE_LEN = SQE.len >> 2;
const SQE_OP_FLAGS = SQE.opFlags >> 2;
const SQE_USER_DATA_LO = SQE.userData >> 2;
const SQE_USER_DATA_HI = SQE_USER_DATA_LO + 1;
/** log2 of the u32 words per CQE: CQE `i` starts at word `cqes + ((i & mask) << CQE_SHIFT)`. */
const CQE_SHIFT = Math.log2(LAYOUT.cqeSize >> 2);
/** Word offset of a CQE's `user_data` low half (read with `IoUring.cq` at `IoUring.cqe(i)` + it). */
export const CQE_USER_DATA_LO: number = LAYOUT.cqe.userData >> 2;
/** Word offset of a CQE's `user_data` high half. */
export const CQE_USER_DATA_HI: number = CQE_USER_DATA_LO + 1;
/** Word offset of a CQE's `res` (signed: read it with `IoUring.cqSigned`). */
export const CQE_RES: number = LAYOUT.cqe.res >> 2;
/** Word offset of a CQE's `flags`. */
export const CQE_FLAGS: number = LAYOUT.cqe.flags >> 2;
/** u32 words per `io_uring_buf` (a power of two), and its log2. */
const BUF_SHIFT = Math.log2(LAYOUT.bufSize >> 2);
const BUF_ADDR_LO = LAYOUT.buf.addr >> 2;
const BUF_ADDR_HI = BUF_ADDR_LO + 1;
const BUF_LEN = LAYOUT.buf.len >> 2;
/** u16 offsets: an entry's `bid`, and the ring's tail (entry 0's `resv`). */
const BUF_BID = LAYOUT.buf.bid >> 1;
const BUF_RING_TAIL = LAYOUT.buf.tail >> 1;
/** 2^32, to split an address (below 2^53) into u32 halves without BigInt. */
const U32 = 4294967296;

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
 * SQEs (the `prep*` methods, as liburing's `io_uring_prep_*`: the only code
 * that knows the SQE layout), enters the kernel, and exposes the CQ ring for
 * the caller to read (`cqe(i)` and the `CQE_*` word offsets). What the
 * requests mean belongs to the caller (`reactor/io_uring.ts`).
 *
 * ## When the SQ has no free slot
 * A `prep*` method that finds the SQ full submits what is queued and takes
 * the slot that frees. It returns false, queueing nothing, only when the SQ
 * stays full after that submit: the caller keeps the work and retries it at
 * its next loop turn (the wait's own `io_uring_enter` submits the SQ again).
 * Cancellations (`prepPollRemove`, `prepCancel`) are never refused: a
 * request in flight holds its own reference to its socket, so a lost cancel
 * would keep a closed connection alive. One that finds no slot waits here
 * and goes before any later SQE (`enter`, or the next `prep*`, writes it
 * first; until it went, every `prep*` returns false), so nothing overtakes
 * a cancel.
 * That is rare: with SUBMIT_ALL the kernel consumes every SQE it is given
 * (a failing one posts an error CQE), and without it (the fallback ring) it
 * stops after a failing SQE but still consumes that one. It consumes none
 * when `io_uring_enter` refuses the whole call: EAGAIN when it cannot
 * allocate requests (memory, a ring being torn down), and, on 5.x kernels,
 * EBUSY while completions overflowed from a full CQ cannot be flushed back
 * into it, which can happen here: SQEs are also prepared while the CQ is
 * being read, before its head is given back.
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
  /** The CQ ring as 32-bit words; CQE `i` starts at word `cqe(i)` (fields: `CQE_*`). */
  readonly cq: Uint32Array;
  /** The same memory as signed words (CQE `res`). */
  readonly cqSigned: Int32Array;
  /** Submits made because a slot request found the SQ full. */
  fullSubmits = 0;
  /**
   * Slot requests that found the SQ full even after a submit (the work was
   * kept by the caller, see the class doc).
   */
  noSlot = 0;
  /** The SQE array as 32-bit words, u16 halves and bytes (fields: the `SQE_*` offsets). */
  readonly #sqeWords: Uint32Array;
  readonly #sqeHalves: Uint16Array;
  readonly #sqeBytes: Uint8Array;
  /** Word index of the first CQE in `cq`. */
  readonly #cqes: number;
  /** `cq_entries - 1`. */
  readonly #cqMask: number;
  /** Testing only (`refuseSlotsForTesting`): slot requests still to refuse. */
  #refuseSlots = 0;
  /**
   * Cancellations that found no slot, in order: [opcode, targetLo, targetHi,
   * userLo, userHi, sqeFlags, ...] (see the class doc).
   */
  readonly #cancels: number[] = [];
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
      this.#sqeWords = new Uint32Array(sqesBuffer);
      this.#sqeHalves = new Uint16Array(sqesBuffer);
      this.#sqeBytes = new Uint8Array(sqesBuffer);
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
    this.#cqMask = this.cq[cq(L.cqOff.ringMask) >> 2];
    this.#cqes = cq(L.cqOff.cqes) >> 2;
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
   * The word index of the next free SQE, zeroed, or -1 when the SQ stays
   * full after a submit, or a cancellation still waits for a slot (see the
   * class doc).
   */
  #slot(): number {
    if (this.#cancels.length !== 0 && !this.#writeCancels()) return -1;
    return this.#freeSlot();
  }

  /** `#slot` without the waiting cancellations' precedence. */
  #freeSlot(): number {
    if (this.#refuseSlots !== 0) {
      this.#refuseSlots--;
      this.noSlot++;
      return -1;
    }
    if (((this.#tail - Atomics.load(this.#sq, this.#sqHead)) >>> 0) >= this.sqEntries) {
      this.fullSubmits++;
      this.submit();
      if (((this.#tail - Atomics.load(this.#sq, this.#sqHead)) >>> 0) >= this.sqEntries) {
        this.noSlot++;
        return -1;
      }
    }
    const w = (this.#tail & this.#sqMask) << SQE_SHIFT;
    this.#tail = (this.#tail + 1) >>> 0;
    this.#sqeWords.fill(0, w, w + SQE_WORDS);
    return w;
  }

  /** Writes the waiting cancellations, in order; whether all went. */
  #writeCancels(): boolean {
    const list = this.#cancels;
    let i = 0;
    for (; i < list.length; i += 6) {
      const w = this.#freeSlot();
      if (w < 0) break;
      this.#prepByUserData(
        w,
        list[i],
        list[i + 1],
        list[i + 2],
        list[i + 3],
        list[i + 4],
        list[i + 5],
      );
    }
    list.copyWithin(0, i);
    list.length -= i;
    return list.length === 0;
  }

  /** Whether a cancellation waits for an SQ slot: the loop must not sleep on it. */
  get hasPendingCancels(): boolean {
    return this.#cancels.length !== 0;
  }

  /**
   * Testing only: the next `n` slot requests (`prep*` calls) fail as when
   * the SQ stays full after a submit, so that callers' keeping of the work
   * can be tested on a real ring. Nothing else calls it.
   */
  refuseSlotsForTesting(n: number): void {
    this.#refuseSlots = n;
  }

  /** `user_data` of the SQE at word `w`, as its low and high u32 halves. */
  #userData(w: number, userLo: number, userHi: number): void {
    this.#sqeWords[w + SQE_USER_DATA_LO] = userLo;
    this.#sqeWords[w + SQE_USER_DATA_HI] = userHi;
  }

  /**
   * Takes a slot and writes what every request on an fd has: its opcode, the
   * fd and `user_data`. Returns the slot's first word, or -1 (no slot).
   */
  #prepOn(opcode: number, fd: number, userLo: number, userHi: number): number {
    const w = this.#slot();
    if (w >= 0) this.#head(w, opcode, fd, userLo, userHi);
    return w;
  }

  /** The opcode, fd and `user_data` of the SQE at word `w`. */
  #head(w: number, opcode: number, fd: number, userLo: number, userHi: number): void {
    this.#sqeBytes[(w << 2) + SQE_OPCODE] = opcode;
    this.#sqeWords[w + SQE_FD] = fd;
    this.#userData(w, userLo, userHi);
  }

  /**
   * Queues an `IORING_OP_NOP` (a completion and nothing else). Each `prep*`
   * method returns false, queueing nothing, when the SQ has no free slot.
   */
  prepNop(userLo: number, userHi: number): boolean {
    return this.#prepOn(IORING_OP_NOP, 0, userLo, userHi) >= 0;
  }

  /** Queues a one-shot `IORING_OP_POLL_ADD` of `events` (poll32_events) on `fd`. */
  prepPollAdd(fd: number, events: number, userLo: number, userHi: number): boolean {
    const w = this.#prepOn(IORING_OP_POLL_ADD, fd, userLo, userHi);
    if (w < 0) return false;
    this.#sqeWords[w + SQE_OP_FLAGS] = events;
    return true;
  }

  /**
   * Queues an `IORING_OP_POLL_REMOVE` of the poll whose `user_data` is
   * `targetLo | targetHi << 32`, with IOSQE_* `sqeFlags` (e.g.
   * `IOSQE_CQE_SKIP_SUCCESS`). Never refused (see the class doc).
   */
  prepPollRemove(
    targetLo: number,
    targetHi: number,
    userLo: number,
    userHi: number,
    sqeFlags: number,
  ): void {
    this.#prepCancellation(IORING_OP_POLL_REMOVE, targetLo, targetHi, userLo, userHi, sqeFlags);
  }

  /**
   * Queues an `IORING_OP_ASYNC_CANCEL` of the (first) request whose
   * `user_data` is `targetLo | targetHi << 32`, with IOSQE_* `sqeFlags`.
   * Never refused (see the class doc).
   */
  prepCancel(
    targetLo: number,
    targetHi: number,
    userLo: number,
    userHi: number,
    sqeFlags: number,
  ): void {
    this.#prepCancellation(IORING_OP_ASYNC_CANCEL, targetLo, targetHi, userLo, userHi, sqeFlags);
  }

  /** A cancellation now, or (no slot) first of what goes next. */
  #prepCancellation(
    opcode: number,
    targetLo: number,
    targetHi: number,
    userLo: number,
    userHi: number,
    sqeFlags: number,
  ): void {
    const w = this.#slot();
    if (w >= 0) this.#prepByUserData(w, opcode, targetLo, targetHi, userLo, userHi, sqeFlags);
    else this.#cancels.push(opcode, targetLo, targetHi, userLo, userHi, sqeFlags);
  }

  /** A request naming another by its `user_data` (in `addr`), on no fd. */
  #prepByUserData(
    w: number,
    opcode: number,
    targetLo: number,
    targetHi: number,
    userLo: number,
    userHi: number,
    sqeFlags: number,
  ): void {
    const words = this.#sqeWords;
    this.#head(w, opcode, -1, userLo, userHi);
    this.#sqeBytes[(w << 2) + SQE_FLAGS] = sqeFlags;
    words[w + SQE_ADDR_LO] = targetLo;
    words[w + SQE_ADDR_HI] = targetHi;
  }

  /**
   * Queues a multishot `IORING_OP_RECV` on `fd` that takes its buffers from
   * the provided-buffer group `bufGroup` (IOSQE_BUFFER_SELECT, 6.0).
   */
  prepRecvMultishot(fd: number, bufGroup: number, userLo: number, userHi: number): boolean {
    const w = this.#prepOn(IORING_OP_RECV, fd, userLo, userHi);
    if (w < 0) return false;
    const h = w << 1;
    this.#sqeBytes[(w << 2) + SQE_FLAGS] = IOSQE_BUFFER_SELECT;
    this.#sqeHalves[h + SQE_IOPRIO] = IORING_RECV_MULTISHOT;
    this.#sqeHalves[h + SQE_BUF_GROUP] = bufGroup;
    return true;
  }

  /**
   * Queues a multishot `IORING_OP_ACCEPT` on the listener `fd` (no peer
   * address asked for); `acceptFlags` as accept4's (SOCK_NONBLOCK, ...).
   */
  prepAcceptMultishot(fd: number, acceptFlags: number, userLo: number, userHi: number): boolean {
    const w = this.#prepOn(IORING_OP_ACCEPT, fd, userLo, userHi);
    if (w < 0) return false;
    this.#sqeHalves[(w << 1) + SQE_IOPRIO] = IORING_ACCEPT_MULTISHOT;
    this.#sqeWords[w + SQE_OP_FLAGS] = acceptFlags;
    return true;
  }

  /**
   * Queues an `IORING_OP_SEND` of `length` bytes at `address` (memory that
   * stays put until the completion) on `fd`, with `msgFlags` (MSG_*).
   */
  prepSend(
    fd: number,
    address: number,
    length: number,
    msgFlags: number,
    userLo: number,
    userHi: number,
  ): boolean {
    const w = this.#prepOn(IORING_OP_SEND, fd, userLo, userHi);
    if (w < 0) return false;
    const words = this.#sqeWords;
    words[w + SQE_ADDR_LO] = address >>> 0;
    words[w + SQE_ADDR_HI] = (address / U32) >>> 0;
    words[w + SQE_LEN] = length;
    words[w + SQE_OP_FLAGS] = msgFlags;
    return true;
  }

  /** Publishes the SQEs written so far (release store of the SQ tail). */
  #publish(): number {
    Atomics.store(this.#sq, this.#sqTailIndex, this.#tail);
    return (this.#tail - Atomics.load(this.#sq, this.#sqHead)) >>> 0;
  }

  /**
   * Submits what is queued without waiting. Returns the SQEs taken, or
   * -errno (EBUSY/EAGAIN: the CQ has overflowed, reap first).
   */
  submit(): number {
    const n = this.#publish();
    if (n === 0) return 0;
    const r = io_uring_enter(NR_IO_URING_ENTER, this.fd, n, 0, 0, null, null);
    return r < 0 ? -errno() : r;
  }

  /**
   * One `io_uring_enter`: submits what is queued and waits for at least one
   * completion for up to `timeoutMs` (0: do not wait, but still run pending
   * completion work; -1: no time limit). Returns the SQEs taken, or
   * -errno on failure (read in this function, right after the call, before
   * anything can overwrite it); EINTR and ETIME (the time ran out) are the
   * caller's "nothing".
   */
  enter(timeoutMs: number): number {
    if (this.#cancels.length !== 0) this.#writeCancels();
    const n = this.#publish();
    let r: number;
    if (timeoutMs === 0) {
      r = io_uring_enter(NR_IO_URING_ENTER, this.fd, n, 0, IORING_ENTER_GETEVENTS, null, null);
    } else if (timeoutMs < 0) {
      r = io_uring_enter(NR_IO_URING_ENTER, this.fd, n, 1, IORING_ENTER_GETEVENTS, null, null);
    } else {
      this.#setTimespec(timeoutMs);
      r = io_uring_enter(
        NR_IO_URING_ENTER,
        this.fd,
        n,
        this.#minComplete,
        IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
        this.#argPointer,
        this.#argSize,
      );
    }
    return r < 0 ? -errno() : r;
  }

  /**
   * Makes every timed `enter` a batched wait: it returns once `minComplete`
   * completions are there, or, after `minWaitUs` µs, once there is at least
   * one (the `min_wait_usec` of `io_uring_getevents_arg`, 6.12). With
   * DEFER_TASKRUN the kernel does not even wake the task for fewer. `(1, 0)`
   * turns it off. Returns false, changing nothing, when the kernel lacks
   * `IORING_FEAT_MIN_TIMEOUT` (it would read the field as padding).
   */
  setBatchedWait(minComplete: number, minWaitUs: number): boolean {
    if (minWaitUs > 0 && (this.features & IORING_FEAT_MIN_TIMEOUT) === 0) return false;
    this.#minComplete = minWaitUs > 0 ? minComplete : 1;
    new DataView(this.#argBuffer.buffer).setUint32(LAYOUT.geteventsMinWait, minWaitUs, true);
    return true;
  }

  /**
   * Changes the count a batched wait waits for (after `setBatchedWait`
   * succeeded; 1 makes a timed `enter` return at the first completion).
   */
  setMinComplete(minComplete: number): void {
    this.#minComplete = minComplete;
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
    this.#setTimespec(timeoutMs);
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

  /** The timespec the getevents argument points at: `timeoutMs` from now. */
  #setTimespec(timeoutMs: number): void {
    const ts = this.#timespec;
    ts[0] = (timeoutMs / 1000) >>> 0; // tv_sec (low half; the high half stays 0)
    ts[2] = (timeoutMs % 1000) * 1_000_000; // tv_nsec
  }

  /** The word index in `cq` (and `cqSigned`) of CQE number `index` (a head or tail value). */
  cqe(index: number): number {
    return this.#cqes + ((index & this.#cqMask) << CQE_SHIFT);
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

/**
 * A ring of provided buffers registered with an `IoUring`
 * (`IORING_REGISTER_PBUF_RING`, 5.19), as liburing's `io_uring_setup_buf_ring`,
 * `io_uring_buf_ring_add` and `io_uring_buf_ring_advance`: `add` writes an
 * entry (`struct io_uring_buf`) at our tail, `publish` hands the entries
 * added so far to the kernel with one release store of the tail, and a
 * request with IOSQE_BUFFER_SELECT in this `group` takes them from its head.
 * The buffers themselves are the caller's (memory that stays put).
 */
export class ProvidedBufferRing {
  /** Entries (a power of two, at most 32768). */
  readonly entries: number;
  /** The buffer group id requests name in `buf_group`. */
  readonly group: number;
  readonly #words: Uint32Array;
  readonly #halves: Uint16Array;
  readonly #pointer: Deno.PointerObject;
  readonly #length: number;
  /** Our tail (u16, as the kernel's): entries before it are added. */
  #tail = 0;

  /**
   * Maps the ring and registers it with `ring` as group `group`.
   *
   * @throws {SyscallError} when the kernel refuses it (before 5.19)
   */
  constructor(ring: IoUring, entries: number, group: number) {
    this.entries = entries;
    this.group = group;
    this.#length = Math.max(4096, entries * LAYOUT.bufSize);
    const mem = mapAnonymous(this.#length);
    this.#pointer = mem.pointer;
    this.#words = new Uint32Array(mem.bytes.buffer);
    this.#halves = new Uint16Array(mem.bytes.buffer);
    const reg = new Uint8Array(LAYOUT.bufRegSize);
    const v = new DataView(reg.buffer);
    v.setBigUint64(LAYOUT.bufReg.ringAddr, BigInt(addressOf(mem.pointer)), true);
    v.setUint32(LAYOUT.bufReg.ringEntries, entries, true);
    v.setUint16(LAYOUT.bufReg.bgid, group, true);
    if (ring.register(IORING_REGISTER_PBUF_RING, reg, 1) < 0) {
      const e = new SyscallError("io_uring_register(PBUF_RING)", errno());
      this.release();
      throw e;
    }
  }

  /** Adds buffer `bid` (`length` bytes at `address`) at the tail; the kernel sees it after `publish`. */
  add(address: number, length: number, bid: number): void {
    const w = (this.#tail & (this.entries - 1)) << BUF_SHIFT;
    const words = this.#words;
    words[w + BUF_ADDR_LO] = address >>> 0;
    words[w + BUF_ADDR_HI] = (address / U32) >>> 0;
    words[w + BUF_LEN] = length;
    // Only the u16 bid: entry 0's resv, next to it, is the ring's tail.
    this.#halves[(w << 1) + BUF_BID] = bid;
    this.#tail = (this.#tail + 1) & 0xffff;
  }

  /** Hands the entries added so far to the kernel (release store of the tail). */
  publish(): void {
    Atomics.store(this.#halves, BUF_RING_TAIL, this.#tail);
  }

  /** Unmaps the ring (after the `IoUring` it was registered with is closed). */
  release(): void {
    unmapAnonymous(this.#pointer, this.#length);
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
