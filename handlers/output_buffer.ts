/**
 * The bytes a connection could not send yet. Kept as one growable array with
 * a read offset: appends copy once, sends read straight from it, and the
 * storage is dropped once it drains so an idle connection holds no buffer.
 * It has no cap of its own: the connection decides what is too much.
 *
 * @module
 */

const MIN_CAPACITY = 16 * 1024;
const EMPTY = new Uint8Array(0);

/** A FIFO of bytes. */
export class OutputBuffer {
  #buf: Uint8Array = EMPTY;
  #head = 0;
  #tail = 0;

  /** Pending bytes. */
  get length(): number {
    return this.#tail - this.#head;
  }

  /** Bytes of storage held (for memory accounting). */
  get capacity(): number {
    return this.#buf.length;
  }

  /** Appends `src[start, end)`. */
  append(src: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (this.#tail + n > this.#buf.length) this.#makeRoom(this.#tail - this.#head, n);
    this.#buf.set(start === 0 && end === src.length ? src : src.subarray(start, end), this.#tail);
    this.#tail += n;
  }

  #makeRoom(pending: number, n: number): void {
    const need = pending + n;
    if (need <= this.#buf.length && this.#head >= this.#buf.length >> 1) {
      // Enough room once the sent prefix is dropped.
      this.#buf.copyWithin(0, this.#head, this.#tail);
    } else {
      // Empty: exactly what is needed (one large write is not rounded up to
      // the next power of two). Growing: at least double, so appends stay
      // amortised O(1) (starting from the same size would copy everything
      // again on every small append to a full buffer).
      let cap = Math.max(MIN_CAPACITY, pending === 0 ? need : this.#buf.length * 2);
      while (cap < need) cap *= 2;
      const next = new Uint8Array(cap);
      next.set(this.#buf.subarray(this.#head, this.#tail));
      this.#buf = next;
    }
    this.#head = 0;
    this.#tail = pending;
  }

  /**
   * The pending bytes for `send(fd, array, length)`: the storage itself when
   * nothing was consumed yet (no allocation), a view otherwise.
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
