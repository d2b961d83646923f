/**
 * Per-fd state kept in typed arrays indexed by fd number, grown by doubling
 * when a higher fd comes: what the reactor and its backends share for it.
 *
 * @module
 */

/** The typed arrays per-fd state is kept in. */
export type FdArray = Uint8Array | Int32Array | Uint32Array | Float64Array;

/** The size, `length` doubled as often as needed, that has room for index `fd`. */
export function sizeFor(length: number, fd: number): number {
  let size = length;
  while (size <= fd) size *= 2;
  return size;
}

/** A copy of `a` in a new array of its kind with `size` entries (the new ones 0). */
export function grown<T extends FdArray>(a: T, size: number): T {
  const b = new (a.constructor as new (length: number) => T)(size);
  b.set(a);
  return b;
}
