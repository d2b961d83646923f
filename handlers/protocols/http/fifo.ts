/**
 * A first-in first-out queue on a ring of slots: `push` and `shift` are a
 * store, a load and index arithmetic. A connection's answers in flight wait
 * in one, in request order. A plain array did the same with
 * `Array.prototype.push` and `shift`, which the compiled HTTP path called
 * as builtins once per request (1.7 % of a pipelined Hono request's CPU).
 *
 * @module
 */

/** A FIFO queue that grows (doubling) as needed and never shrinks. */
export class Fifo<T> {
  #slots: (T | undefined)[];
  /** Index of the first item. */
  #head = 0;
  #size = 0;

  /** @param capacity the slots to start with (rounded up to a power of two) */
  constructor(capacity = 4) {
    let n = 1;
    while (n < capacity) n *= 2;
    this.#slots = emptySlots<T>(n);
  }

  /** The number of items queued. */
  get length(): number {
    return this.#size;
  }

  /** The first item, or undefined when empty. */
  first(): T | undefined {
    return this.#size === 0 ? undefined : this.#slots[this.#head];
  }

  /** Adds `item` at the end. */
  push(item: T): void {
    if (this.#size === this.#slots.length) this.#grow();
    const slots = this.#slots;
    slots[(this.#head + this.#size) & (slots.length - 1)] = item;
    this.#size++;
  }

  /** Takes the first item off (undefined when empty). */
  shift(): T | undefined {
    if (this.#size === 0) return undefined;
    const slots = this.#slots;
    const item = slots[this.#head];
    slots[this.#head] = undefined; // not kept alive by the queue
    this.#head = (this.#head + 1) & (slots.length - 1);
    this.#size--;
    return item;
  }

  /** Drops every item. */
  clear(): void {
    this.#slots.fill(undefined);
    this.#head = 0;
    this.#size = 0;
  }

  /** The items, first to last. */
  *[Symbol.iterator](): IterableIterator<T> {
    const slots = this.#slots;
    for (let k = 0; k < this.#size; k++) yield slots[(this.#head + k) & (slots.length - 1)]!;
  }

  #grow(): void {
    const old = this.#slots;
    const slots = emptySlots<T>(old.length * 2);
    for (let k = 0; k < this.#size; k++) slots[k] = old[(this.#head + k) & (old.length - 1)];
    this.#slots = slots;
    this.#head = 0;
  }
}

/** `n` empty slots in a packed array (no holes: loads need no hole check). */
function emptySlots<T>(n: number): (T | undefined)[] {
  const slots: (T | undefined)[] = [];
  for (let k = 0; k < n; k++) slots.push(undefined);
  return slots;
}
