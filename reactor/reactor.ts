/**
 * The Reactor: an event table (fd -> handler + interest), one backend with a
 * fixed results array, timers, and a run loop that shares the JS thread with
 * Deno's own event loop.
 *
 * ## Loop phases (one iteration)
 * 1. Yield to Deno's loop if this run has held the thread for `yieldEveryMs`.
 * 2. Wait on the JS thread for at most `syncWaitMs` (or less if a timer is due
 *    sooner). Under load this returns at once with events, exactly like a C
 *    loop, and costs one fast FFI call. With batched waits (`batchWaitUs`) on
 *    a backend that cannot wait for a count, a small last turn makes the loop
 *    sleep first so events gather (`batchSleepMicros`).
 * 3. If that wait timed out with nothing ready, the server is idle: park in a
 *    blocking wait on Deno's thread pool (`nonblocking` FFI) until an event or
 *    the next timer, so Deno's timers, promises and signal listeners run
 *    freely meanwhile. The same when Deno's own epoll fds, which we watch
 *    edge-triggered, say Deno has IO to process (e.g. a client in this
 *    process). Leaving the park costs a thread hop (~40 µs), paid
 *    only after `syncWaitMs` of silence.
 * 4. Dispatch each result to its handler, masked by the fd's current
 *    interest (stale results, whose fd was closed and reused during this
 *    batch, are recognised by their token and dropped). A handler that throws
 *    is logged and deregistered; its owner closes the fd (`crashed`).
 * 5. Deferred: callbacks queued with `defer` during dispatch (close
 *    callbacks), so no handler's code runs inside another's.
 * 6. Run the timers that are due, then the deferred queue again.
 *
 * Why 5 ms for `syncWaitMs` (it was 2): a wait that sleeps arms a kernel
 * timer for its timeout, and one due before the next scheduler tick (4 ms at
 * HZ=250) is the earliest: the kernel reprograms the CPU's timer to arm it
 * and again to cancel it. Under a VM each is a trap to the hypervisor:
 * measured here, a 2 ms timeout cost a C epoll server 2.5-3 µs per request at
 * 20,000 requests/s (5 ms, 10 ms and 1 s cost nothing; the server sleeps
 * between most requests at that rate), and this loop 11 % of its CPU per
 * request. 5 ms is also `yieldEveryMs`: Deno's timers run within 5 ms, busy
 * or idle. (A kernel with HZ=100 ticks every 10 ms; there 5 ms still pays.)
 *
 * Why not `epoll_wait(-1)` on the JS thread: it would freeze Deno's loop.
 * Why not always park on the pool: ~40 µs of thread hop per wait is five times
 * a C server's whole cost per request. Why not yield with `setTimeout(0)`: it
 * is clamped to ~1-4 ms. `setImmediate` turns Deno's loop in ~2.5 µs when idle, 40-100 µs
 * after 5 ms of busy JS (measured: ~0.3% of the server's CPU per request).
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { getLogger } from "../log/mod.ts";
import {
  close,
  errno,
  eventfd,
  read,
  setTimerSlackNs,
  sleepMicros,
  timerSlackNs,
  write,
} from "../syscalls/libc.ts";
import { EFD_CLOEXEC, EFD_NONBLOCK, EPOLLET, EPOLLIN, EPOLLRDHUP } from "../syscalls/constants.ts";
import { SyscallError } from "../syscalls/errno.ts";
import { type Backend, type BackendChoice, batchTarget, MAX_BATCH_WAIT_US } from "./backend.ts";
import { autoBackend, IoUringBackend, type IoUringBackendOptions } from "./io_uring.ts";
import { EpollBackend } from "./epoll.ts";
import { grown, sizeFor } from "./fd_table.ts";
import { ALWAYS_REPORTED, Interest } from "./interest.ts";
import { Timer, TimerHeap } from "./timers.ts";

const log = getLogger(["reactor"]);

/** Something that owns an fd and reacts to its readiness. */
export interface Handler {
  /**
   * The fd is ready: `ready` holds `Ready` bits, already masked by the fd's
   * current interest (ERROR and HANGUP always come through).
   */
  ready(ready: number): void;
  /**
   * `ready` threw. The reactor has logged the error and deregistered the fd;
   * the handler still owns the fd and should release it here. The reactor
   * never closes an fd it did not open.
   */
  crashed?(error: unknown): void;
}

/** Work queued with `Reactor.defer`, run in the loop's deferred phase. */
export interface Deferred {
  /** Runs once, after the callback that queued it has returned. */
  runDeferred(): void;
}

/** Counters a reactor keeps about its own loop; tests read them, and they are logged at exit. */
export class ReactorCounters {
  /** Wait calls (epoll_wait, poll or select), on the JS thread or parked. */
  waits = 0;
  /** Of those, waits parked on Deno's thread pool because the server was idle. */
  parkedWaits = 0;
  /** Events delivered to handlers. */
  events = 0;
  /** Results dropped at dispatch: stale (fd closed or reused) or masked out by interest. */
  dropped = 0;
  /** Times Deno's own loop had IO pending and the loop parked to let it run. */
  denoLoopWakeups = 0;
  /** Sleeps before a wait so events gather (batched waits on epoll, poll and select). */
  batchSleeps = 0;
  /** Times the loop yielded to Deno's event loop while busy. */
  yields = 0;
  /** Handler and timer exceptions caught by the loop. */
  handlerErrors = 0;

  /** A plain object copy, for logs and JSON. */
  snapshot(): Record<string, number> {
    return Object.fromEntries(Object.entries(this));
  }
}

/** Reactor settings. */
export interface ReactorOptions {
  /** Readiness mechanism (default epoll); `auto`: io_uring where it works, else epoll. */
  backend?: BackendChoice;
  /** Size of the one results array (epoll's maxevents). Default 1024. */
  maxEvents?: number;
  /**
   * Edge-triggered registrations (EPOLLET), for handlers that drain (to
   * EAGAIN or a short read): true needs epoll; "auto" is edge-triggered
   * where the backend has it (epoll) and level-triggered elsewhere. Default
   * false: a handler that reads once per event never stalls. (A `Server`
   * defaults to "auto": its connections drain.)
   */
  edge?: boolean | "auto";
  /**
   * Longest wait on the JS thread before parking on the pool, and so the
   * longest Deno's timers wait while the server idles. Default 5 ms: a
   * shorter timeout arms the kernel's earliest timer at every wait that
   * sleeps, which costs CPU (see the module comment).
   */
  syncWaitMs?: number;
  /**
   * Under load, yield to Deno's loop at least this often, so Deno timers and
   * signal listeners run (Deno IO cuts in at once through the epoll watch;
   * measured: timers within ~3 ms, signal listeners within ~6 ms). Default 5 ms.
   */
  yieldEveryMs?: number;
  /**
   * Watch Deno's own epoll fds so Deno IO cuts a JS-thread wait
   * short (epoll backend only). Default true.
   */
  watchDenoLoop?: boolean;
  /**
   * Batched waits, in µs (0: off, the default). Under load the loop runs
   * fewer, fuller turns, for less CPU per event, and a turn may start up to
   * this much later. On io_uring the kernel waits for `BATCH_SIZE`
   * completions (or half the fds registered, if fewer) or this long (Linux
   * 6.12; before, the loop's sleep below). On epoll, poll and select the
   * loop sleeps this long before a wait when the last one found a small turn
   * (see `batchSleepMicros`). Either way a lone client is not made to wait.
   */
  batchWaitUs?: number;
  /** Settings of the io_uring backend (ring and buffer sizes), for `io_uring` and `auto`. */
  ioUring?: IoUringBackendOptions;
}

const NO_HANDLER = null;
/**
 * Microtask turns the loop gives in-flight handler promises after each
 * dispatch: enough for a chain of awaits on resolved values (a Hono app
 * passes ~6-10); each costs well under a microsecond.
 */
const MICROTASK_TURNS = 16;
/** The longest timeout an i32 millisecond argument holds (~24.8 days). */
const MAX_WAIT_MS = 0x7fffffff;

/** The backends made at once (poll and select, the experiments', load on demand). */
type SyncBackendChoice = Exclude<BackendChoice, "poll" | "select">;

function createBackend(
  name: BackendChoice,
  maxEvents: number,
  ioUring: IoUringBackendOptions = {},
): Promise<Backend> | Backend {
  switch (name) {
    case "poll":
      return import("./poll.ts").then((m) => new m.PollBackend(maxEvents));
    case "select":
      return import("./select.ts").then((m) => new m.SelectBackend(maxEvents));
    default:
      return createSyncBackend(name, maxEvents, ioUring);
  }
}

function createSyncBackend(
  name: SyncBackendChoice,
  maxEvents: number,
  ioUring: IoUringBackendOptions,
): Backend {
  switch (name) {
    case "epoll":
      return new EpollBackend(maxEvents);
    case "io_uring":
      return new IoUringBackend(maxEvents, ioUring);
    case "auto":
      return autoBackend(maxEvents, ioUring);
    default:
      throw new Error(`unknown backend ${name}`);
  }
}

/**
 * Batched waits where the backend cannot wait for a count (epoll, poll and
 * select return at the first event): how long the loop sleeps before a wait
 * so that the wait finds a fuller batch, in µs (0: no sleep).
 *
 * Only after a small turn: fewer results than `batchTarget(registered)`
 * (`BATCH_SIZE`, or half the fds when fewer: a wait reports an fd once, so a
 * loop with few fds cannot fill a batch, and a lone client is never made to
 * wait). Not after
 * an idle wait (the wait sleeps until the first event anyway), never before
 * a look (timeout 0), never longer than the wait it precedes (a timer is due).
 *
 * @param lastCount results of the last wait
 * @param registered fds registered (that a wait could report)
 * @param batchWaitUs the batched wait, in µs (0: off)
 * @param timeoutMs the timeout of the wait about to be made (-1: none)
 */
export function batchSleepMicros(
  lastCount: number,
  registered: number,
  batchWaitUs: number,
  timeoutMs: number,
): number {
  if (batchWaitUs === 0 || timeoutMs === 0 || lastCount === 0) return 0;
  if (lastCount >= batchTarget(registered)) return 0;
  return timeoutMs > 0 && timeoutMs * 1000 < batchWaitUs ? timeoutMs * 1000 : batchWaitUs;
}

/** Timer slack while batched waits are on: 1 µs. */
const BATCH_TIMER_SLACK_NS = 1000;
/** Reactors with batched waits on this thread, and the thread's slack before the first. */
let tightSlackHolders = 0;
let slackBefore = 0;

/**
 * A batched wait is a sleep (or, on io_uring, a timed wait) of
 * `batchWaitUs`, and the kernel may end it as much as the thread's timer
 * slack later: 50 µs by default, which made `--batch-wait 20` add 70 µs.
 * While any reactor batches, the thread's slack is 1 µs; the last one to
 * close puts the old value back.
 */
function holdTightTimerSlack(): void {
  if (tightSlackHolders++ > 0) return;
  slackBefore = timerSlackNs();
  const r = setTimerSlackNs(BATCH_TIMER_SLACK_NS);
  if (r < 0) log.debug("could not set the timer slack: errno {errno}", { errno: -r });
}

function releaseTightTimerSlack(): void {
  if (--tightSlackHolders > 0 || slackBefore < 1) return;
  setTimerSlackNs(slackBefore);
}

/** The io_uring backend's options, with the batched wait (the kernel does those waits). */
function ioUringOptions(opts: ReactorOptions, batchWaitUs: number): IoUringBackendOptions {
  return { ...opts.ioUring, batchWaitUs };
}

/**
 * The batched wait asked for, in µs: `batchWaitUs`, or the older
 * `ioUring.batchWaitUs`; checked before any backend exists.
 */
function batchWaitOf(opts: ReactorOptions): number {
  const us = opts.batchWaitUs ?? opts.ioUring?.batchWaitUs ?? 0;
  if (!Number.isInteger(us) || us < 0 || us > MAX_BATCH_WAIT_US) {
    throw new RangeError(
      `batchWaitUs must be an integer from 0 to ${MAX_BATCH_WAIT_US}, got ${us}`,
    );
  }
  return us;
}

function checkMaxEvents(opts: ReactorOptions): number {
  const maxEvents = opts.maxEvents ?? 1024;
  if (!Number.isInteger(maxEvents) || maxEvents < 1) {
    throw new RangeError(`maxEvents must be a positive integer, got ${maxEvents}`);
  }
  return maxEvents;
}

const yieldToDeno = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Drains the eventfd that `Reactor.wake` writes to. */
class Waker implements Handler {
  readonly fd: number;
  readonly #buf = new Uint8Array(8);

  constructor() {
    this.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.fd < 0) throw new SyscallError("eventfd", errno());
    this.#buf[0] = 1;
  }

  ready(): void {
    read(this.fd, this.#buf, 8);
  }

  wake(): void {
    this.#buf[0] = 1;
    write(this.fd, this.#buf, 8);
  }
}

/**
 * Watches Deno's own epoll instances (tokio's IO driver) from inside ours,
 * edge-triggered: when Deno has IO to deliver, our wait returns
 * and the loop yields at once instead of holding the thread for up to
 * `syncWaitMs`. Found by their `anon_inode:[eventpoll]` links in
 * /proc/self/fd before our own epoll fd exists.
 */
class DenoLoopWatch implements Handler {
  pending = false;

  static existingEpollFds(): number[] {
    const fds: number[] = [];
    try {
      for (const entry of Deno.readDirSync("/proc/self/fd")) {
        try {
          if (Deno.readLinkSync(`/proc/self/fd/${entry.name}`) === "anon_inode:[eventpoll]") {
            fds.push(Number(entry.name));
          }
        } catch { /* the fd closed while we looked */ }
      }
    } catch { /* no /proc: fall back to periodic yields only */ }
    return fds;
  }

  ready(): void {
    this.pending = true;
  }
}

/**
 * Deno's own epoll fds, found once when this module loads: before any
 * Reactor exists, so the epoll fds of other reactors in this process (which
 * must not be nested: ELOOP) are never among them.
 */
const DENO_EPOLL_FDS = DenoLoopWatch.existingEpollFds();

/**
 * One event loop. Handlers register fds with an `Interest`; `run()` waits and
 * dispatches until `stop()`.
 *
 * ```ts ignore
 * const reactor = await Reactor.create();
 * reactor.register(fd, { ready(r) { if (r & Ready.READABLE) read(fd) } }, Interest.READABLE);
 * await reactor.run();
 * ```
 */
export class Reactor {
  /** The readiness mechanism. */
  readonly backend: Backend;
  /** Whether fds are registered edge-triggered: handlers must drain (to EAGAIN, or a short read). */
  readonly edge: boolean;
  /** Counters; see `ReactorCounters`. */
  readonly counters = new ReactorCounters();
  /** Batched waits in effect, in µs (0: none), whichever does them: the kernel or this loop. */
  readonly batchWaitUs: number;
  /** `performance.now()` as of the current loop iteration. */
  now: number = performance.now();

  #handlers: (Handler | null)[] = [];
  /** Per fd: the backend bits it is registered with (without EPOLLET), for masking results. */
  #interest = new Int32Array(1024);
  #tokens = new Uint32Array(1024);
  #nextToken = 1;
  readonly #triggerBits: number;
  #timers = new TimerHeap();
  #waker: Waker;
  #denoLoop = new DenoLoopWatch();
  #running = false;
  #parked = false;
  #parkedUntil = Infinity;
  #done: Promise<void> | null = null;
  /** > 0 while a handler, timer or deferred callback runs. */
  #inCallback = 0;
  #deferred: Deferred[] = [];
  /** Handler promises in flight (`asyncStarted` minus `asyncSettled`). */
  #awaiting = 0;
  readonly #syncWaitMs: number;
  readonly #yieldEveryMs: number;
  /** Batched waits done by this loop (sleeping before a wait), in µs; 0 on io_uring, which waits in the kernel. */
  readonly #gatherUs: number;
  /** Fds registered through `register` (not the loop's own: waker, Deno's epoll fds). */
  #registered = 0;
  readonly #beforeWait: (() => void)[] = [];

  private constructor(
    backend: Backend,
    opts: ReactorOptions,
    batchWaitUs: number,
    denoEpollFds: number[],
  ) {
    this.backend = backend;
    this.edge = opts.edge === "auto" ? backend.supportsEdge : opts.edge ?? false;
    if (this.edge && !backend.supportsEdge) {
      backend.close();
      throw new Error(
        `edge-triggered mode needs the epoll backend; ${backend.name} is level-triggered only`,
      );
    }
    this.#triggerBits = this.edge ? EPOLLET : 0;
    this.#syncWaitMs = opts.syncWaitMs ?? 5;
    this.#yieldEveryMs = opts.yieldEveryMs ?? 5;
    // io_uring batches in the kernel where it can (and says how long); otherwise this loop sleeps.
    this.#gatherUs = backend.batchWaitUs === undefined ? batchWaitUs : 0;
    this.batchWaitUs = batchWaitUs;
    this.#waker = new Waker();
    this.#add(this.#waker.fd, this.#waker, EPOLLIN);
    if (backend.supportsEdge && opts.watchDenoLoop !== false) {
      for (const fd of denoEpollFds) {
        try {
          this.#add(fd, this.#denoLoop, EPOLLIN | EPOLLET);
        } catch (e) {
          // Not fatal: the loop still yields every yieldEveryMs.
          log.debug("not watching epoll fd {fd}: {error}", { fd, error: (e as Error).message });
        }
      }
    }
    if (this.batchWaitUs > 0) holdTightTimerSlack();
  }

  /** Creates a reactor (async because the poll/select backends load on demand). */
  static async create(opts: ReactorOptions = {}): Promise<Reactor> {
    const batchWaitUs = batchWaitOf(opts);
    return new Reactor(
      await createBackend(
        opts.backend ?? "epoll",
        checkMaxEvents(opts),
        ioUringOptions(opts, batchWaitUs),
      ),
      opts,
      batchWaitUs,
      DENO_EPOLL_FDS,
    );
  }

  /**
   * Creates a reactor synchronously (for APIs that must listen before they
   * return, like `Deno.serve`): epoll, io_uring or auto.
   *
   * @throws {TypeError} for poll and select (they load on demand: use `create`)
   * @throws {IoUringUnavailableError} for io_uring where it cannot be set up
   */
  static createSync(opts: ReactorOptions = {}): Reactor {
    const backend = opts.backend ?? "epoll";
    if (backend === "poll" || backend === "select") {
      throw new TypeError(`Cannot create a ${backend} reactor synchronously: use Reactor.create`);
    }
    const batchWaitUs = batchWaitOf(opts);
    return new Reactor(
      createSyncBackend(backend, checkMaxEvents(opts), ioUringOptions(opts, batchWaitUs)),
      opts,
      batchWaitUs,
      DENO_EPOLL_FDS,
    );
  }

  #ensure(fd: number): void {
    if (fd < this.#interest.length) return;
    const size = sizeFor(this.#interest.length, fd);
    this.#interest = grown(this.#interest, size);
    this.#tokens = grown(this.#tokens, size);
  }

  /** The backend bits for `interest`: a read interest also hears the peer's FIN. */
  #bits(interest: Interest): number {
    return (interest & Interest.READABLE) !== 0 ? interest | EPOLLRDHUP : interest;
  }

  #add(fd: number, handler: Handler, bits: number): void {
    if (fd < 0) throw new RangeError(`Cannot register fd ${fd}`);
    this.#ensure(fd);
    const token = this.#nextToken;
    this.#nextToken = (token + 1) >>> 0 || 1;
    this.backend.add(fd, bits, token);
    while (this.#handlers.length <= fd) this.#handlers.push(NO_HANDLER);
    this.#handlers[fd] = handler;
    this.#interest[fd] = bits & ~EPOLLET;
    this.#tokens[fd] = token;
    if (this.backend.changesNeedWake && this.#parked) this.wake();
  }

  /**
   * Adds `fd` with `handler` and `interest` (`Interest.READABLE`,
   * `Interest.WRITABLE`, both, or `Interest.NONE`). In edge mode the fd is
   * registered edge-triggered.
   *
   * @throws {SyscallError} if the backend refuses the fd (EEXIST, EBADF, EINVAL, select's FD_SETSIZE)
   */
  register(fd: number, handler: Handler, interest: Interest): void {
    this.#add(fd, handler, this.#bits(interest) | this.#triggerBits);
    this.#registered++;
    this.backend.setBatchTarget?.(batchTarget(this.#registered));
  }

  /** Changes the interest of a registered fd; a no-op when it is unchanged. */
  reregister(fd: number, interest: Interest): void {
    const bits = this.#bits(interest);
    if (this.#interest[fd] === bits) return;
    this.backend.modify(fd, bits | this.#triggerBits, this.#tokens[fd]);
    this.#interest[fd] = bits;
    if (this.backend.changesNeedWake && this.#parked) this.wake();
  }

  /** Whether `fd` has a handler. */
  isRegistered(fd: number): boolean {
    return this.#handlers[fd] != null;
  }

  /**
   * Removes `fd` (before its owner closes it); a no-op when it is not
   * registered. Results for it still in this batch are dropped.
   */
  deregister(fd: number): void {
    if (this.#handlers[fd] == null) return;
    this.#registered--;
    this.#remove(fd);
    this.backend.setBatchTarget?.(batchTarget(this.#registered));
  }

  /** `deregister` of the loop's own fds (`#add`), which `#registered` does not count. */
  #remove(fd: number): void {
    this.#handlers[fd] = NO_HANDLER;
    this.#interest[fd] = 0;
    this.#tokens[fd] = 0;
    this.backend.remove(fd);
    if (this.backend.changesNeedWake && this.#parked) this.wake();
  }

  /**
   * Runs `task.runDeferred()` once no handler, timer or deferred callback is
   * on the stack: at the end of the current dispatch or timer phase, or at
   * once when called from outside the loop's callbacks (libuv's closing
   * handles, redis's freeClientAsync). Close callbacks go here, so closing
   * one connection never runs another's code inside the caller.
   */
  defer(task: Deferred): void {
    if (this.#inCallback > 0) {
      this.#deferred.push(task);
      return;
    }
    this.#inCallback++;
    try {
      task.runDeferred();
    } catch (error) {
      this.#callbackThrew("deferred callback", error);
    } finally {
      this.#inCallback--;
    }
    this.#runDeferred();
  }

  /**
   * A handler started work that settles outside the loop (it returned a
   * promise). While any is in flight the loop lets the microtask queue run
   * after each dispatch and never waits on the JS thread, so an awaiting
   * handler is not held back by the reactor. Pair with `asyncSettled`.
   */
  asyncStarted(): void {
    this.#awaiting++;
  }

  /** The work `asyncStarted` announced has settled. */
  asyncSettled(): void {
    this.#awaiting--;
  }

  /** Handler promises in flight. */
  get awaiting(): number {
    return this.#awaiting;
  }

  /**
   * Lets queued promise reactions run: each await is one microtask turn, and
   * an async handler may need several (one per await it passes through on
   * already-resolved values). Stops as soon as nothing is in flight; what
   * waits on a timer or IO settles later, in Deno's loop.
   */
  async #drainMicrotasks(): Promise<void> {
    for (let i = 0; i < MICROTASK_TURNS && this.#awaiting > 0; i++) await undefined;
  }

  /** Creates a timer that runs `callback` after `delayMs`. Keep it to reset or cancel it. */
  setTimer(delayMs: number, callback: () => void): Timer {
    const t = new Timer(callback);
    this.resetTimer(t, delayMs);
    return t;
  }

  /** (Re)schedules `timer` to fire `delayMs` from now. Allocates nothing. */
  resetTimer(timer: Timer, delayMs: number): void {
    const at = performance.now() + delayMs;
    this.#timers.schedule(timer, at);
    if (this.#parked && at < this.#parkedUntil) this.wake();
  }

  /** Unschedules `timer`. */
  cancelTimer(timer: Timer): void {
    this.#timers.cancel(timer);
  }

  /** Runs `hook` before every wait (redis's beforeSleep): flush batched work here. */
  beforeWait(hook: () => void): void {
    this.#beforeWait.push(hook);
  }

  /** Interrupts a wait in progress (from a signal listener, a Deno timer, ...). */
  wake(): void {
    this.#waker.wake();
    if (this.#parked && this.backend.wakeParked) this.backend.wakeParked();
  }

  /** Whether `run()` is looping. */
  get running(): boolean {
    return this.#running;
  }

  /** Runs the loop until `stop()`. Resolves when the loop has exited. */
  run(): Promise<void> {
    if (this.#done) return this.#done;
    this.#running = true;
    this.#done = this.#loop();
    return this.#done;
  }

  /** Asks the loop to exit after the current iteration; safe from any callback. */
  stop(): void {
    if (!this.#running) return;
    this.#running = false;
    this.wake();
  }

  /**
   * Lets the backend finish what it took for fds already closed (io_uring:
   * bytes of closed connections still being sent), for up to `ms` (default
   * 1 s). A no-op on the readiness backends, whose `send` hands bytes to the
   * kernel at once. Call after `run()` resolved, before `close`.
   */
  async drain(ms?: number): Promise<void> {
    if (this.backend.drain) await this.backend.drain(ms);
  }

  /** Releases the backend and the waker. Call after `run()` resolved. */
  close(): void {
    if (this.#running) throw new Error("Cannot close a running reactor: stop() and await run()");
    this.#runDeferred();
    this.#remove(this.#waker.fd);
    close(this.#waker.fd);
    this.backend.close();
    if (this.batchWaitUs > 0) releaseTightTimerSlack();
  }

  #timeout(cap: number): number {
    const next = this.#timers.peek();
    if (next === undefined) return cap;
    const ms = Math.ceil(next.at - this.now);
    if (ms <= 0) return 0;
    // An i32 timeout: a far (or Infinity) deadline must not wrap or become 0.
    if (ms > MAX_WAIT_MS) return cap < 0 ? MAX_WAIT_MS : cap;
    return cap < 0 || ms < cap ? ms : cap;
  }

  async #loop(): Promise<void> {
    const backend = this.backend;
    const counters = this.counters;
    const denoLoop = this.#denoLoop;
    let sliceStart = this.now = performance.now();
    // Results of the last wait, for batched waits (a small turn lets the next gather).
    let lastCount = 0;
    try {
      while (this.#running) {
        // this.now was set after the last wait: one clock read per iteration.
        if (this.now - sliceStart >= this.#yieldEveryMs) {
          counters.yields++;
          await yieldToDeno();
          if (!this.#running) break;
          this.now = sliceStart = performance.now();
        }
        this.#runBeforeWait();
        // With handler promises in flight, never hold the JS thread: look
        // (timeout 0), and park at once when nothing is ready, so Deno's
        // loop runs their timers and IO with no added delay.
        const awaiting = this.#awaiting > 0;
        const cap = awaiting ? 0 : this.#syncWaitMs;
        const timeout = this.#timeout(cap);
        const nap = batchSleepMicros(
          lastCount,
          this.#registered,
          this.#gatherUs,
          timeout,
        );
        if (nap > 0) {
          sleepMicros(nap);
          counters.batchSleeps++;
        }
        const n = backend.wait(timeout);
        lastCount = n;
        counters.waits++;
        this.#afterWait(n);
        if (this.#awaiting > 0) await this.#drainMicrotasks();
        if (!this.#running) break;
        const idle = n === 0 && timeout === cap;
        if (!idle && !denoLoop.pending) continue;
        // Park off the JS thread: we are idle, or Deno's loop has IO
        // waiting, which only a real turn of its loop will process.
        if (denoLoop.pending) {
          denoLoop.pending = false;
          counters.denoLoopWakeups++;
        }
        this.#runBeforeWait();
        const parkMs = this.#timeout(-1);
        this.#parked = true;
        this.#parkedUntil = parkMs < 0 ? Infinity : this.now + parkMs;
        const m = await backend.waitBlocking(parkMs);
        lastCount = m;
        this.#parked = false;
        counters.waits++;
        counters.parkedWaits++;
        this.#afterWait(m);
        if (this.#awaiting > 0) await this.#drainMicrotasks();
        sliceStart = this.now;
      }
    } finally {
      this.#running = false;
      this.#runDeferred();
    }
  }

  #runBeforeWait(): void {
    const hooks = this.#beforeWait;
    for (let i = 0; i < hooks.length; i++) {
      try {
        hooks[i]();
      } catch (error) {
        this.#callbackThrew("beforeWait hook", error);
      }
    }
  }

  /** Phases after a wait: dispatch, deferred, timers, deferred. */
  #afterWait(n: number): void {
    this.now = performance.now();
    if (n > 0) {
      this.#dispatch(n);
      this.#runDeferred();
    }
    this.#runTimers();
  }

  #dispatch(n: number): void {
    const backend = this.backend;
    const handlers = this.#handlers;
    const tokens = this.#tokens;
    const interest = this.#interest;
    const counters = this.counters;
    counters.events += n;
    this.#inCallback++;
    for (let i = 0; i < n; i++) {
      const fd = backend.resultFd(i);
      const handler = handlers[fd];
      // Stale (the fd was closed, or closed and reused, earlier in this
      // batch) or no longer asked for (an earlier callback changed the
      // interest): one mask here, for every backend.
      const ready = backend.resultEvents(i) & (interest[fd] | ALWAYS_REPORTED);
      if (handler == null || tokens[fd] !== backend.resultToken(i) || ready === 0) {
        counters.dropped++;
        continue;
      }
      try {
        handler.ready(ready);
      } catch (error) {
        this.#crashed(fd, handler, error);
      }
    }
    this.#inCallback--;
  }

  /** A handler threw: log it once, deregister its fd, and let its owner release it. */
  #crashed(fd: number, handler: Handler, error: unknown): void {
    this.#callbackThrew(`handler of fd ${fd}`, error);
    if (this.#handlers[fd] === handler) this.deregister(fd);
    if (handler.crashed) {
      try {
        handler.crashed(error);
      } catch (again) {
        this.#callbackThrew(`crashed() of fd ${fd}`, again);
      }
    }
  }

  #callbackThrew(what: string, error: unknown): void {
    this.counters.handlerErrors++;
    log.error("{what} threw: {error}", { what, error });
  }

  #runDeferred(): void {
    if (this.#deferred.length === 0) return;
    this.#inCallback++;
    // A deferred callback may queue more (closing one side of a pair closes
    // the other): run until the queue is empty. Each close queues once.
    for (let i = 0; i < this.#deferred.length; i++) {
      try {
        this.#deferred[i].runDeferred();
      } catch (error) {
        this.#callbackThrew("deferred callback", error);
      }
    }
    this.#deferred.length = 0;
    this.#inCallback--;
  }

  #runTimers(): void {
    let timer: Timer | undefined;
    this.#inCallback++;
    while ((timer = this.#timers.popDue(this.now)) !== undefined) {
      try {
        timer.callback();
      } catch (error) {
        this.#callbackThrew("timer callback", error);
      }
    }
    this.#inCallback--;
    this.#runDeferred();
  }
}
