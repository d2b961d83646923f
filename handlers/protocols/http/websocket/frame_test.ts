import assert from "node:assert/strict";
import { concat } from "../../../../tests/support/net.ts";
import { closePayload, frame } from "../../../../tests/support/ws.ts";
import { FrameParser, type FrameSink, unmask, writeFrameHeader } from "./frame.ts";

type Event = [string, ...unknown[]];

class Recorder implements FrameSink {
  events: Event[] = [];
  onText(text: string, size: number) {
    assert.equal(size, new TextEncoder().encode(text).length);
    this.events.push(["text", text]);
  }
  onBinary(data: Uint8Array<ArrayBuffer>) {
    this.events.push(["binary", Array.from(data)]);
  }
  onPing(p: Uint8Array, s: number, e: number) {
    this.events.push(["ping", Array.from(p.subarray(s, e))]);
  }
  onPong(p: Uint8Array, s: number, e: number) {
    this.events.push(["pong", Array.from(p.subarray(s, e))]);
  }
  onClose(code: number, reason: string) {
    this.events.push(["close", code, reason]);
  }
  onFail(code: number, reason: string) {
    this.events.push(["fail", code, reason]);
  }
}

/** Parses `bytes` whole, then split at every byte, then byte by byte: the events must agree. */
function parse(bytes: Uint8Array, max?: number): Event[] {
  const run = (cuts: number[]) => {
    const r = new Recorder();
    const p = new FrameParser(r, max);
    let at = 0;
    for (const cut of [...cuts, bytes.length]) {
      const copy = bytes.slice(at, cut); // the parser unmasks in place: a fresh copy per run
      p.execute(copy, 0, copy.length);
      at = cut;
    }
    return r.events;
  };
  const whole = run([]);
  for (let cut = 1; cut < bytes.length && bytes.length < 400; cut++) {
    assert.deepEqual(run([cut]), whole, `split at ${cut}`);
  }
  if (bytes.length < 400) {
    assert.deepEqual(run(Array.from({ length: bytes.length - 1 }, (_, i) => i + 1)), whole);
  }
  return whole;
}

const fails = (events: Event[], code: number) => {
  const last = events[events.length - 1];
  assert.equal(last[0], "fail", JSON.stringify(events));
  assert.equal(last[1], code, JSON.stringify(events));
};

Deno.test("frame: text, binary, empty and large messages", () => {
  assert.deepEqual(parse(frame(1, "hello")), [["text", "hello"]]);
  assert.deepEqual(parse(frame(1, "")), [["text", ""]]);
  assert.deepEqual(parse(frame(2, new Uint8Array([1, 2, 3]))), [["binary", [1, 2, 3]]]);
  assert.deepEqual(parse(frame(2)), [["binary", []]]);
  // A BOM is text, not a marker to strip.
  assert.deepEqual(parse(frame(1, "\ufeffx")), [["text", "\ufeffx"]]);
  // 16-bit and 64-bit lengths.
  const mid = new Uint8Array(300).map((_, i) => i & 0xff);
  assert.deepEqual(parse(frame(2, mid)), [["binary", Array.from(mid)]]);
  const big = new Uint8Array(70000).map((_, i) => (i * 7) & 0xff);
  const events = parse(frame(2, big));
  assert.deepEqual(events, [["binary", Array.from(big)]]);
  // Several frames in one read.
  assert.deepEqual(parse(concat(frame(1, "a"), frame(1, "b"), frame(2, new Uint8Array([9])))), [
    ["text", "a"],
    ["text", "b"],
    ["binary", [9]],
  ]);
});

Deno.test("frame: fragments with control frames between, text split inside a character", () => {
  const bytes = new TextEncoder().encode("héllo ✓ wörld");
  const cut = 2; // inside "é"
  const msg = concat(
    frame(1, bytes.subarray(0, cut), { fin: false }),
    frame(9, "p1"),
    frame(0, bytes.subarray(cut, 9), { fin: false }),
    frame(10, "q"),
    frame(0, bytes.subarray(9)),
  );
  assert.deepEqual(parse(msg), [
    ["ping", [0x70, 0x31]],
    ["pong", [0x71]],
    ["text", "héllo ✓ wörld"],
  ]);
  const bin = concat(
    frame(2, new Uint8Array([1, 2]), { fin: false }),
    frame(0, new Uint8Array([]), { fin: false }),
    frame(0, new Uint8Array([3])),
  );
  assert.deepEqual(parse(bin), [["binary", [1, 2, 3]]]);
});

Deno.test("frame: close frames: code and reason, none, and bad ones", () => {
  assert.deepEqual(parse(frame(8, closePayload(1000, "bye"))), [["close", 1000, "bye"]]);
  assert.deepEqual(parse(frame(8)), [["close", 1005, ""]]);
  assert.deepEqual(parse(frame(8, closePayload(4999))), [["close", 4999, ""]]);
  fails(parse(frame(8, new Uint8Array([3]))), 1002);
  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1100, 2999, 5000]) {
    fails(parse(frame(8, closePayload(code))), 1002);
  }
  fails(parse(frame(8, concat(closePayload(1000), new Uint8Array([0xff])))), 1007);
  // Nothing after a close frame is read.
  assert.deepEqual(parse(concat(frame(8, closePayload(1000)), frame(1, "late"))), [
    ["close", 1000, ""],
  ]);
});

Deno.test("frame: protocol errors close with 1002", () => {
  fails(parse(frame(1, "x", { mask: false })), 1002); // clients must mask
  for (const rsv of [1, 2, 4]) fails(parse(frame(1, "x", { rsv })), 1002);
  for (const op of [3, 4, 5, 6, 7, 11, 12, 15]) fails(parse(frame(op, "x")), 1002);
  fails(parse(frame(9, new Uint8Array(126))), 1002); // control over 125
  assert.deepEqual(parse(frame(9, new Uint8Array(125))), [["ping", Array(125).fill(0)]]);
  fails(parse(frame(9, "x", { fin: false })), 1002); // fragmented control
  fails(parse(frame(0, "x")), 1002); // continuation with no message
  fails(parse(concat(frame(1, "a", { fin: false }), frame(1, "b"))), 1002); // new message inside one
  fails(parse(concat(frame(2, "a", { fin: false }), frame(2, "b"))), 1002);
  // Events before the error are kept; nothing after it.
  const events = parse(concat(frame(1, "ok"), frame(1, "x", { rsv: 4 }), frame(1, "never")));
  assert.deepEqual(events.slice(0, 1), [["text", "ok"]]);
  assert.equal(events.length, 2);
  // A 64-bit length with the top bit set.
  const bad = frame(2, new Uint8Array(70000));
  bad[2] |= 0x80;
  fails(parse(bad.subarray(0, 14)), 1002);
});

Deno.test("frame: invalid UTF-8 closes with 1007, also across fragments", () => {
  fails(parse(frame(1, new Uint8Array([0xc3, 0x28]))), 1007);
  fails(parse(frame(1, new Uint8Array([0xed, 0xa0, 0x80]))), 1007); // a surrogate
  fails(parse(frame(1, new Uint8Array([0xf4, 0x90, 0x80, 0x80]))), 1007); // above U+10FFFF
  // Fragments: each part incomplete, the whole valid.
  const euro = new Uint8Array([0xe2, 0x82, 0xac]);
  assert.deepEqual(
    parse(concat(
      frame(1, euro.subarray(0, 1), { fin: false }),
      frame(0, euro.subarray(1, 2), { fin: false }),
      frame(0, euro.subarray(2)),
    )),
    [["text", "€"]],
  );
  // Invalid across fragments, and incomplete at the end of the message.
  fails(parse(concat(frame(1, euro.subarray(0, 2), { fin: false }), frame(0, "x"))), 1007);
  fails(parse(concat(frame(1, "ok", { fin: false }), frame(0, euro.subarray(0, 2)))), 1007);
  // Fail fast: the bad byte is reported before the message ends.
  const events = parse(frame(1, new Uint8Array([0x61, 0xff]), { fin: false }));
  fails(events, 1007);
});

Deno.test("frame: messages over the maximum close with 1009 before their payload arrives", () => {
  fails(parse(frame(2, new Uint8Array(200)), 100), 1009);
  assert.deepEqual(parse(frame(2, new Uint8Array(100)), 100), [["binary", Array(100).fill(0)]]);
  // Counted across fragments.
  fails(
    parse(
      concat(
        frame(1, "a".repeat(60), { fin: false }),
        frame(0, "b".repeat(60)),
      ),
      100,
    ),
    1009,
  );
  // Told by the header alone: a 1 GiB frame's first 14 bytes.
  const r = new Recorder();
  const header = new Uint8Array([0x82, 0xff, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4]);
  new FrameParser(r).execute(header, 0, header.length);
  assert.deepEqual(r.events, [["fail", 1009, `message over ${16 << 20} bytes`]]);
});

Deno.test("frame: unmask at every phase and length agrees with a byte loop", () => {
  const key = [0xa1, 0xb2, 0xc3, 0xd4];
  const m = (key[0] << 24) | (key[1] << 16) | (key[2] << 8) | key[3];
  for (let len = 0; len < 40; len++) {
    for (let phase = 0; phase < 4; phase++) {
      const data = new Uint8Array(len + 3).map((_, i) => i * 13);
      const want = data.slice();
      for (let i = 0; i < len; i++) want[3 + i] ^= key[(phase + i) & 3];
      const after = unmask(data, 3, 3 + len, m, phase);
      assert.deepEqual(data, want);
      assert.equal(after, (phase + len) & 3);
    }
  }
});

Deno.test("frame: server headers for each length class", () => {
  const out = new Uint8Array(10);
  assert.equal(writeFrameHeader(out, 0, 1, 125), 2);
  assert.deepEqual(Array.from(out.subarray(0, 2)), [0x81, 125]);
  assert.equal(writeFrameHeader(out, 0, 2, 126), 4);
  assert.deepEqual(Array.from(out.subarray(0, 4)), [0x82, 126, 0, 126]);
  assert.equal(writeFrameHeader(out, 0, 2, 65536), 10);
  assert.deepEqual(Array.from(out), [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
  writeFrameHeader(out, 0, 2, 2 ** 32 + 5);
  assert.deepEqual(Array.from(out), [0x82, 127, 0, 0, 0, 1, 0, 0, 0, 5]);
});

Deno.test("frame: a large fragmented binary message in reads of every size: one buffer, exact", () => {
  const parts = [70000, 0, 70000, 5].map((n, k) =>
    new Uint8Array(n).map((_, i) => (i * 7 + k) & 0xff)
  );
  const whole = concat(...parts);
  const bytes = concat(
    ...parts.map((p, k) => frame(k === 0 ? 2 : 0, p, { fin: k === parts.length - 1 })),
  );
  for (const step of [1, 7, 1000, 65536, bytes.length]) {
    const got: Uint8Array[] = [];
    const r = new Recorder();
    r.onBinary = (d) => void got.push(d);
    const p = new FrameParser(r);
    for (let at = 0; at < bytes.length; at += step) {
      const chunk = bytes.slice(at, Math.min(bytes.length, at + step));
      p.execute(chunk, 0, chunk.length);
    }
    assert.equal(got.length, 1, `step ${step}: ${JSON.stringify(r.events)}`);
    assert.equal(got[0].byteLength, whole.length);
    assert.equal(got[0].buffer.byteLength, whole.length); // trimmed: the app's ArrayBuffer is exact
    assert.deepEqual(got[0], whole);
  }
});
