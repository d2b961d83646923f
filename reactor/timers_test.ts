/**
 * Unit tests for the timer heap. Every connection's idle, header and write
 * timeouts live here, so a heap that loses a timer, fires one early or keeps
 * a cancelled one is a server that leaks connections or kills live ones.
 * The heap's array is private: these tests check it through what the reactor
 * uses (peek, popDue, size, `Timer.index`, `Timer.active`).
 */
import assert from "node:assert/strict";
import { Timer, TimerHeap } from "./timers.ts";

const noop = () => {};

/** A small deterministic PRNG (mulberry32), so a failure can be replayed from its seed. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Timers scheduled at `deadlines`, in that order. */
function scheduled(heap: TimerHeap, deadlines: number[]): Timer[] {
  return deadlines.map((at) => {
    const t = new Timer(noop);
    heap.schedule(t, at);
    return t;
  });
}

/** Pops every timer (now = Infinity), returning their deadlines in pop order. */
function drain(heap: TimerHeap): number[] {
  const out: number[] = [];
  for (let t = heap.popDue(Infinity); t !== undefined; t = heap.popDue(Infinity)) out.push(t.at);
  return out;
}

/**
 * The heap invariants, seen from outside: the scheduled timers' indices are
 * exactly 0..size-1, and each timer's deadline is no earlier than its
 * parent's (index (i - 1) >> 1). `live` must be every scheduled timer.
 */
function assertHeap(heap: TimerHeap, live: Iterable<Timer>): void {
  const byIndex: Timer[] = [];
  for (const t of live) {
    assert.ok(t.active, `a scheduled timer (at ${t.at}) is not active`);
    assert.equal(byIndex[t.index], undefined, `two timers claim index ${t.index}`);
    byIndex[t.index] = t;
  }
  assert.equal(byIndex.length, heap.size, "indices are not 0..size-1");
  for (let i = 0; i < byIndex.length; i++) {
    assert.ok(byIndex[i] !== undefined, `no timer at index ${i}`);
    if (i > 0) {
      const parent = byIndex[(i - 1) >> 1];
      assert.ok(
        parent.at <= byIndex[i].at,
        `index ${i} (${byIndex[i].at}) < parent (${parent.at})`,
      );
    }
  }
  if (heap.size > 0) assert.equal(heap.peek(), byIndex[0], "peek is not the root");
}

Deno.test("a new timer is inactive, at index -1, and keeps its callback", () => {
  let ran = 0;
  const t = new Timer(() => ran++);
  assert.equal(t.active, false);
  assert.equal(t.index, -1);
  t.callback();
  assert.equal(ran, 1);
});

Deno.test("an empty heap has size 0, peeks undefined and has nothing due even at Infinity", () => {
  const heap = new TimerHeap();
  assert.equal(heap.size, 0);
  assert.equal(heap.peek(), undefined);
  assert.equal(heap.popDue(Infinity), undefined);
});

Deno.test("schedule makes a timer active, counts it, and peek returns the nearest deadline", () => {
  const heap = new TimerHeap();
  const [a, b, c] = scheduled(heap, [30, 10, 20]);
  assert.equal(heap.size, 3);
  assert.ok(a.active && b.active && c.active);
  assert.equal(heap.peek(), b);
  assertHeap(heap, [a, b, c]);
});

Deno.test("rescheduling a scheduled timer earlier moves it to the front without adding a copy", () => {
  const heap = new TimerHeap();
  const timers = scheduled(heap, [10, 20, 30, 40, 50, 60, 70]);
  const last = timers[6];
  heap.schedule(last, 5);
  assert.equal(heap.size, 7, "the move added a second entry");
  assert.equal(heap.peek(), last);
  assert.equal(last.at, 5);
  assertHeap(heap, timers);
  assert.deepEqual(drain(heap), [5, 10, 20, 30, 40, 50, 60]);
});

Deno.test("rescheduling a scheduled timer later moves it behind the others", () => {
  const heap = new TimerHeap();
  const timers = scheduled(heap, [10, 20, 30, 40, 50, 60, 70]);
  heap.schedule(timers[0], 65);
  assert.equal(heap.size, 7);
  assert.equal(heap.peek(), timers[1]);
  assertHeap(heap, timers);
  assert.deepEqual(drain(heap), [20, 30, 40, 50, 60, 65, 70]);
});

Deno.test("rescheduling to the same deadline changes nothing", () => {
  const heap = new TimerHeap();
  const timers = scheduled(heap, [10, 20, 30]);
  const before = timers.map((t) => t.index);
  heap.schedule(timers[1], 20);
  assert.deepEqual(timers.map((t) => t.index), before);
  assertHeap(heap, timers);
});

Deno.test("cancel of the timer in the last slot removes only it", () => {
  // Inserted in this order the array is [10, 20, 40, 30]: the last slot holds
  // 30, not the latest deadline, so only the slot decides what is removed.
  const heap = new TimerHeap();
  const timers = scheduled(heap, [20, 30, 40, 10]);
  const last = timers[1];
  assert.equal(last.index, heap.size - 1, "the layout this test relies on changed");
  heap.cancel(last);
  assert.equal(last.active, false);
  assert.equal(last.index, -1);
  assert.equal(heap.size, 3);
  assertHeap(heap, timers.filter((t) => t !== last));
  assert.deepEqual(drain(heap), [10, 20, 40]);
});

Deno.test("cancel of a middle timer keeps every other timer, in order", () => {
  const heap = new TimerHeap();
  const timers = scheduled(heap, [10, 20, 30, 40, 50, 60, 70]);
  const middle = timers[2]; // at 30, neither the root nor the last slot
  assert.ok(middle.index > 0 && middle.index < heap.size - 1);
  heap.cancel(middle);
  assert.equal(middle.active, false);
  assertHeap(heap, timers.filter((t) => t !== middle));
  assert.deepEqual(drain(heap), [10, 20, 40, 50, 60, 70]);
});

Deno.test("cancel of the root makes the next nearest deadline the root", () => {
  const heap = new TimerHeap();
  const timers = scheduled(heap, [10, 20, 30, 40, 50]);
  heap.cancel(timers[0]);
  assert.equal(heap.peek(), timers[1]);
  assertHeap(heap, timers.slice(1));
});

Deno.test("cancel that fills the hole with a timer nearer than the hole's parent moves it up", () => {
  // Inserted in this order the array is [1, 10, 2, 11, 12, 3, 4]. Cancelling
  // 12 (index 4) moves the last timer, 4, into index 4, whose parent holds
  // 10: sifting down alone would leave 4 below 10.
  const heap = new TimerHeap();
  const timers = scheduled(heap, [1, 10, 2, 11, 12, 3, 4]);
  const twelve = timers[4];
  assert.equal(twelve.index, 4, "the layout this test relies on changed");
  heap.cancel(twelve);
  assertHeap(heap, timers.filter((t) => t !== twelve));
  assert.equal(timers[6].index, 1, "4 did not move up to its parent's slot");
  assert.deepEqual(drain(heap), [1, 2, 3, 4, 10, 11]);
});

Deno.test("cancel of an unscheduled timer, or a second cancel, is harmless", () => {
  const heap = new TimerHeap();
  const timers = scheduled(heap, [10, 20, 30]);
  const stranger = new Timer(noop);
  heap.cancel(stranger);
  assert.equal(heap.size, 3);
  heap.cancel(timers[1]);
  heap.cancel(timers[1]);
  assert.equal(heap.size, 2, "a second cancel removed another timer");
  assertHeap(heap, [timers[0], timers[2]]);
  assert.deepEqual(drain(heap), [10, 30]);
});

Deno.test("cancel of the only timer empties the heap", () => {
  const heap = new TimerHeap();
  const [t] = scheduled(heap, [10]);
  heap.cancel(t);
  assert.equal(heap.size, 0);
  assert.equal(heap.peek(), undefined);
  assert.equal(t.active, false);
});

Deno.test("popDue returns nothing before the nearest deadline and the timer at its deadline exactly", () => {
  const heap = new TimerHeap();
  const [a, b] = scheduled(heap, [100, 200]);
  assert.equal(heap.popDue(99.999), undefined);
  assert.equal(heap.size, 2, "a timer that was not due was removed");
  assert.equal(heap.popDue(100), a, "a deadline equal to now is due");
  assert.equal(a.active, false, "a popped timer must read as unscheduled");
  assert.equal(heap.popDue(150), undefined);
  assert.equal(heap.popDue(1e9), b);
  assert.equal(heap.size, 0);
});

Deno.test("popDue with 2,000 random deadlines returns them in the order of a sorted reference", () => {
  const rand = rng(20260101);
  const heap = new TimerHeap();
  // Integers in a small range give many ties; fractions give none.
  const deadlines = Array.from(
    { length: 2000 },
    (_, i) => i % 2 ? Math.floor(rand() * 500) : rand() * 1e6,
  );
  const timers = scheduled(heap, deadlines);
  assertHeap(heap, timers);
  const sorted = [...deadlines].sort((x, y) => x - y);
  // Pop in steps of `now` to check that nothing later than now comes out.
  const popped: number[] = [];
  for (const now of [-1, 0, 250, 499, 1e3, 5e5, 1e6]) {
    for (let t = heap.popDue(now); t !== undefined; t = heap.popDue(now)) {
      assert.ok(t.at <= now, `${t.at} popped at now = ${now}`);
      popped.push(t.at);
    }
    const next = heap.peek();
    assert.ok(next === undefined || next.at > now, "a due timer was left in the heap");
  }
  assert.deepEqual(popped, sorted);
  assert.ok(timers.every((t) => !t.active));
});

Deno.test("timers with the same deadline all come out, each exactly once", () => {
  const heap = new TimerHeap();
  const timers = scheduled(heap, Array.from({ length: 50 }, (_, i) => (i % 5 === 0 ? 7 : 3)));
  const seen = new Set<Timer>();
  for (let t = heap.popDue(3); t !== undefined; t = heap.popDue(3)) {
    assert.equal(t.at, 3);
    assert.ok(!seen.has(t), "a timer came out twice");
    seen.add(t);
  }
  assert.equal(seen.size, 40);
  assert.equal(heap.size, 10, "the later ties must wait");
  for (let t = heap.popDue(7); t !== undefined; t = heap.popDue(7)) seen.add(t);
  assert.equal(seen.size, 50);
  assert.deepEqual(new Set(timers), seen);
});

Deno.test("a popped or cancelled timer can be scheduled again, once", () => {
  const heap = new TimerHeap();
  const [a, b] = scheduled(heap, [10, 20]);
  assert.equal(heap.popDue(10), a);
  heap.schedule(a, 30);
  heap.cancel(b);
  heap.schedule(b, 5);
  assert.equal(heap.size, 2);
  assertHeap(heap, [a, b]);
  assert.deepEqual(drain(heap), [5, 30]);
});

Deno.test("10,000 random schedules, moves, cancels and pops agree with a reference model", () => {
  // The reactor's real pattern: per-connection timers moved later on
  // activity, pulled earlier, cancelled on close, popped when due.
  for (const seed of [1, 2, 3]) {
    const rand = rng(seed);
    const heap = new TimerHeap();
    const pool = Array.from({ length: 64 }, () => new Timer(noop));
    const model = new Map<Timer, number>();
    let now = 0;
    for (let step = 0; step < 10000; step++) {
      const t = pool[Math.floor(rand() * pool.length)];
      const op = rand();
      if (op < 0.5) {
        // Schedule or move, earlier or later; whole numbers make ties common.
        const at = now + Math.floor(rand() * 100);
        heap.schedule(t, at);
        model.set(t, at);
      } else if (op < 0.7) {
        heap.cancel(t);
        model.delete(t);
      } else {
        now += Math.floor(rand() * 10);
        const due = [...model.values()].filter((at) => at <= now);
        const nearest = due.length ? Math.min(...due) : undefined;
        const got = heap.popDue(now);
        assert.equal(got?.at, nearest, `seed ${seed}, step ${step}: popDue(${now})`);
        if (got !== undefined) {
          assert.ok(model.has(got), `seed ${seed}, step ${step}: popped an unscheduled timer`);
          model.delete(got);
        }
      }
      assert.equal(heap.size, model.size, `seed ${seed}, step ${step}: size`);
      for (const p of pool) assert.equal(p.active, model.has(p), `seed ${seed}, step ${step}`);
      if (step % 97 === 0) assertHeap(heap, model.keys());
    }
    const rest = [...model.values()].sort((x, y) => x - y);
    assert.deepEqual(drain(heap), rest, `seed ${seed}: the final drain`);
  }
});
