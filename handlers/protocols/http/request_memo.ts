/**
 * A connection's last simple request (kept alive, without a body), kept as
 * bytes: when the same bytes come again from an idle parser, it is the same
 * request, and the built-in routes, the native API and the fetch path take
 * it without parsing it again (the parser's fields still describe it; the
 * fetch path makes its request objects anew from them). Compared four bytes
 * per step.
 *
 * @module
 */

/** Longest request remembered (wrk's is ~50 bytes). */
export const MEMO_MAX = 256;

/** Parses in a row without a repeat after which `parseBegins` says to remember one request in MEMO_PROBE. */
const MEMO_MISSES = 16;

/** While a connection does not repeat itself, one request in this many (a power of two) is remembered. */
const MEMO_PROBE = 64;

/** Whether this machine stores words little-endian (x86_64 and aarch64 do). */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * A DataView of the array last compared against (mostly the reactor's read
 * buffer, which comes back read after read): made again only when the array
 * changes. One per thread, shared by every memo.
 */
let view: DataView | null = null;
let viewOf: Uint8Array | null = null;

function viewFor(data: Uint8Array): DataView {
  if (data !== viewOf || view === null) {
    view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    viewOf = data;
  }
  return view;
}

/** The remembered bytes of one connection. */
export class RequestMemo {
  /** How many bytes are remembered; 0: none. */
  length = 0;
  #bytes: Uint8Array | null = null;
  /** The same bytes as 32-bit words in this machine's byte order. */
  #words: Int32Array | null = null;
  /** Parses begun since the memo last matched. */
  #misses = 0;

  /**
   * Whether `data[at, end)` starts with the remembered bytes. Never past
   * `end`: the bytes behind it in a reused read buffer are an older read's.
   */
  matches(data: Uint8Array, at: number, end: number): boolean {
    const len = this.length;
    if (len === 0 || end - at < len) return false;
    const view = viewFor(data);
    const words = this.#words!;
    const whole = len >> 2;
    for (let k = 0; k < whole; k++) {
      if (view.getInt32(at + (k << 2), LITTLE_ENDIAN) !== words[k]) return false;
    }
    const bytes = this.#bytes!;
    for (let k = whole << 2; k < len; k++) if (data[at + k] !== bytes[k]) return false;
    this.#misses = 0;
    return true;
  }

  /** Remembers `data[from, to)` (at most MEMO_MAX bytes). */
  remember(data: Uint8Array, from: number, to: number): void {
    if (this.#bytes === null) {
      this.#bytes = new Uint8Array(MEMO_MAX);
      this.#words = new Int32Array(this.#bytes.buffer);
    }
    // Word by word through the view (no view allocated per request, as
    // set(subarray()) would), the last few bytes one by one.
    const bytes = this.#bytes!;
    const words = this.#words!;
    const view = viewFor(data);
    const len = to - from;
    const whole = len >> 2;
    for (let k = 0; k < whole; k++) words[k] = view.getInt32(from + (k << 2), LITTLE_ENDIAN);
    for (let k = whole << 2; k < len; k++) bytes[k] = data[from + k];
    this.length = len;
  }

  /** Forgets the bytes. */
  forget(): void {
    this.length = 0;
  }

  /**
   * A parse begins from an idle parser (the memo did not match): forgets the
   * bytes, and says whether the request about to be parsed is worth
   * remembering. Remembering costs a copy, and trying the memo before each
   * request costs one parse call per request: after MEMO_MISSES parses in a
   * row without a repeat, only one request in MEMO_PROBE is (a repeat
   * starts the count again). The fetch path asks; the others remember all.
   */
  parseBegins(): boolean {
    this.length = 0;
    const misses = ++this.#misses;
    return misses <= MEMO_MISSES || (misses & (MEMO_PROBE - 1)) === 0;
  }
}
