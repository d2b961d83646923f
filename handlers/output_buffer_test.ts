/**
 * OutputBuffer: a FIFO of bytes with a read offset, growth by doubling, one
 * exact allocation for a large append into an empty buffer, compaction when
 * the sent prefix passes half the storage, and no storage held when empty.
 */
import assert from "node:assert/strict";
import { OutputBuffer } from "./output_buffer.ts";

const MIN_CAPACITY = 16 * 1024; // output_buffer.ts: the smallest storage it allocates

/** Bytes `offset, offset + 1, ...` modulo 251 (a prime: no period lines up with a power of two). */
function bytes(length: number, offset = 0): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (offset + i) % 251;
  return out;
}

/** The pending bytes as a copy (pending() may be the whole storage: `send(fd, it, length)`). */
function contents(buf: OutputBuffer): Uint8Array {
  return buf.pending().slice(0, buf.length);
}

/** A small deterministic PRNG (mulberry32), so a failure reproduces. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("OutputBuffer: a new buffer is empty and holds no storage", () => {
  const buf = new OutputBuffer();
  assert.equal(buf.length, 0);
  assert.equal(buf.capacity, 0);
  assert.equal(buf.pending().length, 0);
});

Deno.test("OutputBuffer: append, pending and consume keep the bytes in order, and the storage is released when it drains", () => {
  const buf = new OutputBuffer();
  const src = bytes(100);
  buf.append(src, 10, 30); // a slice
  assert.equal(buf.length, 20);
  assert.equal(buf.capacity, MIN_CAPACITY, "a small append gets the minimum storage");
  assert.ok(buf.pending().length >= buf.length);
  assert.deepEqual(contents(buf), src.slice(10, 30));
  buf.append(src, 0, src.length); // the whole array
  assert.equal(buf.length, 120);
  assert.deepEqual(contents(buf), new Uint8Array([...src.slice(10, 30), ...src]));

  buf.consume(15);
  assert.equal(buf.length, 105);
  assert.equal(buf.pending().length, 105, "after a consume, pending() is exactly the bytes left");
  assert.deepEqual(buf.pending(), new Uint8Array([...src.slice(25, 30), ...src]));
  assert.equal(buf.capacity, MIN_CAPACITY, "still held while bytes wait");

  buf.append(src, 5, 5); // nothing
  assert.equal(buf.length, 105);

  buf.consume(105);
  assert.equal(buf.length, 0);
  assert.equal(buf.capacity, 0, "drained: the storage is released");
  assert.equal(buf.pending().length, 0);

  buf.append(src, 0, 7);
  assert.equal(buf.capacity, MIN_CAPACITY, "usable again after draining");
  buf.clear();
  assert.equal(buf.length, 0);
  assert.equal(buf.capacity, 0, "clear() releases the storage too");
});

Deno.test("OutputBuffer: many random appends and partial consumes come out in FIFO order, byte for byte, against a reference", () => {
  const rand = random(20240611);
  const buf = new OutputBuffer();
  const TOTAL = 24 << 20;
  const ref = bytes(TOTAL); // the stream: every byte appended, in order
  let appended = 0; // ref[consumed, appended) is what buf should hold
  let consumed = 0;
  let compared = 0;
  let maxCapacity = 0;
  for (let op = 0; appended < TOTAL - 200_000; op++) {
    if (rand() < 0.55) {
      // Sizes from 0 to ~100 KB, most of them small; sometimes from the
      // start of a source array, sometimes from an inner offset.
      const n = Math.min(Math.floor(rand() ** 3 * 100_000), TOTAL - appended);
      if (rand() < 0.5) {
        buf.append(ref.slice(appended, appended + n), 0, n);
      } else {
        const pad = Math.floor(rand() * 64);
        const src = ref.subarray(appended - Math.min(pad, appended), appended + n + pad);
        const start = Math.min(pad, appended);
        buf.append(src, start, start + n);
      }
      appended += n;
    } else if (buf.length > 0) {
      const n = rand() < 0.1 ? buf.length : 1 + Math.floor(rand() * Math.min(buf.length, 80_000));
      const front = buf.pending();
      for (let i = 0; i < n; i++) {
        if (front[i] !== ref[consumed + i]) {
          assert.fail(
            `op ${op}: byte ${consumed + i} is ${front[i]}, expected ${ref[consumed + i]}`,
          );
        }
      }
      compared += n;
      buf.consume(n);
      consumed += n;
    }
    assert.equal(buf.length, appended - consumed, `op ${op}: length`);
    if (buf.length === 0) assert.equal(buf.capacity, 0, `op ${op}: empty but holding storage`);
    else assert.ok(buf.capacity >= buf.length, `op ${op}: capacity below length`);
    maxCapacity = Math.max(maxCapacity, buf.capacity);
  }
  // Everything left comes out in order too.
  assert.deepEqual(contents(buf), ref.slice(consumed, appended));
  compared += buf.length;
  buf.consume(buf.length);
  assert.equal(compared, appended, "every byte appended was compared once");
  assert.equal(buf.capacity, 0);
  assert.ok(maxCapacity > MIN_CAPACITY, "the buffer grew during the run");
});

Deno.test("OutputBuffer: one large append into an empty buffer gets exactly its size, not the next power of two", () => {
  for (const size of [MIN_CAPACITY + 1, 1_000_003, 40 << 20]) {
    const buf = new OutputBuffer();
    const src = bytes(size);
    buf.append(src, 0, size);
    assert.equal(buf.capacity, size, `append of ${size} bytes`);
    assert.equal(buf.length, size);
    assert.equal(buf.pending()[size - 1], src[size - 1]);
    buf.consume(size);
    assert.equal(buf.capacity, 0);
  }
  const buf = new OutputBuffer();
  buf.append(bytes(100), 10, 10 + MIN_CAPACITY + 5); // a slice of a larger array counts its own size
  assert.equal(buf.capacity, MIN_CAPACITY + 5);
});

Deno.test("OutputBuffer: growing with bytes pending doubles the storage until the bytes fit", () => {
  const buf = new OutputBuffer();
  const src = bytes(300_000);
  buf.append(src, 0, 10);
  assert.equal(buf.capacity, MIN_CAPACITY);
  buf.append(src, 10, MIN_CAPACITY); // fills it exactly
  assert.equal(buf.capacity, MIN_CAPACITY, "a full buffer has not grown yet");
  buf.append(src, MIN_CAPACITY, MIN_CAPACITY + 1); // one byte more
  assert.equal(buf.capacity, 2 * MIN_CAPACITY, "doubled");
  buf.append(src, MIN_CAPACITY + 1, 100_000); // needs 100,000: 32 Ki -> 64 Ki -> 128 Ki
  assert.equal(buf.capacity, 128 * 1024, "doubled until it fits");
  assert.deepEqual(contents(buf), src.slice(0, 100_000));

  // A large append with bytes pending still doubles (amortised growth), unlike into an empty buffer.
  const big = new OutputBuffer();
  big.append(src, 0, 1);
  big.append(src, 1, 200_001);
  assert.equal(big.capacity, 256 * 1024);
  assert.deepEqual(contents(big), src.slice(0, 200_001));
});

Deno.test("OutputBuffer: with the sent prefix past half the storage, an append that fits compacts in place instead of growing", () => {
  const buf = new OutputBuffer();
  const src = bytes(3 * MIN_CAPACITY);
  buf.append(src, 0, MIN_CAPACITY); // full
  buf.consume(MIN_CAPACITY / 2 + 100); // the head is past half
  const storage = buf.pending().buffer;
  const left = buf.length;
  buf.append(src, MIN_CAPACITY, MIN_CAPACITY + 5000); // does not fit after the tail, fits once compacted
  assert.equal(buf.capacity, MIN_CAPACITY, "no growth");
  assert.equal(buf.pending().buffer, storage, "the same storage, moved to the front");
  assert.equal(buf.pending().length, MIN_CAPACITY, "head at 0: pending() is the storage itself");
  assert.equal(buf.length, left + 5000);
  assert.deepEqual(contents(buf), src.slice(MIN_CAPACITY / 2 + 100, MIN_CAPACITY + 5000));
});

// Regression: with bytes pending and the sent prefix under half the storage,
// #makeRoom once allocated new storage of the SAME size, so a writer and a
// reader trickling 1 KB each way at a full 4 MiB buffer copied 4 MiB per
// append (2,000 appends: ~0.8 s). Growth now at least doubles.
Deno.test({
  name:
    "OutputBuffer: with the sent prefix under half the storage, an append that does not fit after the tail doubles the storage",
  fn() {
    const buf = new OutputBuffer();
    const src = bytes(3 * MIN_CAPACITY);
    buf.append(src, 0, MIN_CAPACITY);
    buf.consume(1000); // the head is short of half: compacting would move 15 KB for 1 KB of room
    const storage = buf.pending().buffer;
    buf.append(src, MIN_CAPACITY, MIN_CAPACITY + 500);
    assert.notEqual(buf.pending().buffer, storage, "new storage");
    assert.equal(buf.capacity, 2 * MIN_CAPACITY, "doubled, not reallocated at the same size");
    assert.deepEqual(contents(buf), src.slice(1000, MIN_CAPACITY + 500));
  },
});

Deno.test({
  name:
    "OutputBuffer: a steady trickle (consume 1 KB, append 1 KB) at a full buffer reallocates a few times, not on every append",
  fn() {
    const size = 1 << 20;
    const buf = new OutputBuffer();
    buf.append(bytes(size), 0, size); // one large write: capacity exactly its size, tail at the end
    const piece = bytes(1024, size);
    let storage = buf.pending().buffer;
    let storages = 0;
    for (let i = 0; i < 2000; i++) {
      buf.consume(1024);
      buf.append(piece, 0, 1024);
      if (buf.pending().buffer !== storage) {
        storages++;
        storage = buf.pending().buffer;
      }
    }
    assert.equal(buf.length, size);
    assert.ok(storages <= 3, `${storages} new storages for 2000 appends of 1 KB`);
  },
});
