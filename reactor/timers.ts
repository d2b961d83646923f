/**
 * Timers owned by the reactor: a binary min-heap on deadline. The nearest
 * deadline becomes the wait timeout, so epoll needs no per-fd timeouts.
 * A `Timer` object is reusable: resetting it moves it in the heap in
 * O(log n) and allocates nothing, which makes per-connection idle timeouts
 * cheap.
 *
 * @module
 */

/** A one-shot timer. Re-arm it with `TimerHeap.schedule` (or `Reactor.setTimer`). */
export class Timer {
  /** Deadline in `performance.now()` milliseconds. */
  at = 0;
  /** Position in the heap, -1 when not scheduled. */
  index: number = -1;
  /** What runs at the deadline. */
  callback: () => void;

  /** A timer that will run `callback`; not scheduled until `TimerHeap.schedule`. */
  constructor(callback: () => void) {
    this.callback = callback;
  }

  /** Whether the timer is scheduled. */
  get active(): boolean {
    return this.index >= 0;
  }
}

/** A min-heap of timers keyed by deadline. */
export class TimerHeap {
  readonly #items: Timer[] = [];

  /** How many timers are scheduled. */
  get size(): number {
    return this.#items.length;
  }

  /** The timer with the nearest deadline, or undefined. */
  peek(): Timer | undefined {
    return this.#items[0];
  }

  /** Schedules (or moves) a timer to deadline `at`. */
  schedule(timer: Timer, at: number): void {
    if (timer.index >= 0) {
      const earlier = at < timer.at;
      timer.at = at;
      if (earlier) this.#up(timer.index);
      else this.#down(timer.index);
      return;
    }
    timer.at = at;
    timer.index = this.#items.length;
    this.#items.push(timer);
    this.#up(timer.index);
  }

  /** Unschedules a timer; harmless when it is not scheduled. */
  cancel(timer: Timer): void {
    const i = timer.index;
    if (i < 0) return;
    const items = this.#items;
    const last = items.pop()!;
    timer.index = -1;
    if (last !== timer) {
      items[i] = last;
      last.index = i;
      this.#down(i);
      this.#up(last.index);
    }
  }

  /** Removes and returns the nearest timer if its deadline is at or before `now`. */
  popDue(now: number): Timer | undefined {
    const top = this.#items[0];
    if (top === undefined || top.at > now) return undefined;
    this.cancel(top);
    return top;
  }

  #up(i: number): void {
    const items = this.#items;
    const t = items[i];
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (items[p].at <= t.at) break;
      items[i] = items[p];
      items[i].index = i;
      i = p;
    }
    items[i] = t;
    t.index = i;
  }

  #down(i: number): void {
    const items = this.#items;
    const n = items.length;
    const t = items[i];
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && items[r].at < items[l].at ? r : l;
      if (items[c].at >= t.at) break;
      items[i] = items[c];
      items[i].index = i;
      i = c;
    }
    items[i] = t;
    t.index = i;
  }
}
