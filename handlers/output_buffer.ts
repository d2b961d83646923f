/**
 * The bytes a connection could not send yet. Kept as one growable array with
 * a read offset: appends copy once, sends read straight from it, and the
 * storage is dropped once it drains so an idle connection holds no buffer.
 *
 * @module
 */

const MIN_CAPACITY = 16 * 1024;
const EMPTY = new Uint8Array(0);

/** A FIFO of bytes with a hard cap. */
export class OutputBuffer {
  #buf: Uint8Array = EMPTY;
  #head = 0;
  #tail = 0;
  /** Appends beyond this many pending bytes are refused. */
  readonly maxBytes: number;

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  /** Pending bytes. */
  get length(): number {
    return this.#tail - this.#head;
  }

  /** Bytes of storage held (for memory accounting). */
  get capacity(): number {
    return this.#buf.length;
  }

  /** Appends `src[start, end)`; false (and nothing appended) if it would pass `maxBytes`. */
  append(src: Uint8Array, start: number, end: number): boolean {
    const n = end - start;
    const pending = this.#tail - this.#head;
    if (pending + n > this.maxBytes) return false;
    if (this.#tail + n > this.#buf.length) this.#makeRoom(pending, n);
    this.#buf.set(start === 0 && end === src.length ? src : src.subarray(start, end), this.#tail);
    this.#tail += n;
    return true;
  }

  #makeRoom(pending: number, n: number): void {
    const need = pending + n;
    if (need <= this.#buf.length && this.#head >= this.#buf.length >> 1) {
      // Enough room once the sent prefix is dropped.
      this.#buf.copyWithin(0, this.#head, this.#tail);
    } else {
      let cap = Math.max(MIN_CAPACITY, this.#buf.length);
      while (cap < need) cap *= 2;
      const next = new Uint8Array(cap);
      next.set(this.#buf.subarray(this.#head, this.#tail));
      this.#buf = next;
    }
    this.#head = 0;
    this.#tail = pending;
  }

  /**
   * The pending bytes as `[array, length]` for `send(fd, array, length)`:
   * the storage itself when nothing was consumed yet (no allocation), a
   * view otherwise.
   */
  pending(): Uint8Array {
    return this.#head === 0 ? this.#buf : this.#buf.subarray(this.#head, this.#tail);
  }

  /** Drops `n` sent bytes from the front; releases the storage when empty. */
  consume(n: number): void {
    this.#head += n;
    if (this.#head >= this.#tail) this.clear();
  }

  /** Drops everything and releases the storage. */
  clear(): void {
    this.#buf = EMPTY;
    this.#head = 0;
    this.#tail = 0;
  }
}
