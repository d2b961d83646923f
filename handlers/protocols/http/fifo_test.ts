import assert from "node:assert/strict";
import { Fifo } from "./fifo.ts";

Deno.test("Fifo: first in, first out, across wrap-arounds and growth", () => {
  const q = new Fifo<number>(2);
  const model: number[] = [];
  let next = 0;
  // A fixed pseudo-random mix of pushes and shifts, checked against an array.
  let seed = 7;
  for (let step = 0; step < 5000; step++) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    if (seed % 3 !== 0 || model.length === 0) {
      q.push(next);
      model.push(next++);
    } else {
      assert.equal(q.shift(), model.shift());
    }
    assert.equal(q.length, model.length);
    assert.equal(q.first(), model[0]);
    if (step % 97 === 0) assert.deepEqual([...q], model);
  }
  while (model.length > 0) assert.equal(q.shift(), model.shift());
  assert.equal(q.shift(), undefined);
  assert.equal(q.first(), undefined);
});

Deno.test("Fifo: clear() empties it, and it is usable after", () => {
  const q = new Fifo<string>();
  for (const s of ["a", "b", "c", "d", "e"]) q.push(s);
  q.shift();
  q.clear();
  assert.equal(q.length, 0);
  assert.deepEqual([...q], []);
  q.push("f");
  assert.deepEqual([...q], ["f"]);
});
