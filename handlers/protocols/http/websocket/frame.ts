/**
 * The WebSocket frame codec (RFC 6455 section 5), server side: a parser fed
 * with the connection's read buffer, and the header writer for the frames we
 * send.
 *
 * Parsing is in place. A frame whose payload is all in the read just made is
 * unmasked where it lies and handed on from there: a text message is decoded
 * straight from the read buffer (no byte copy), a binary one is copied once
 * into the `ArrayBuffer` the app keeps. Only a message split across reads or
 * fragments gathers its bytes: text through a streaming decoder (still no
 * byte copy), binary into one buffer that becomes the app's. So a message is
 * copied once at most.
 *
 * Checks, each ending the connection with its close code (the socket sends
 * the close frame): reserved bits without an extension, unknown opcodes, an
 * unmasked client frame, a control frame over 125 bytes or fragmented, a
 * continuation with no message started or a new message inside one, a bad
 * close payload (1002); text that is not UTF-8, also across fragments, and a
 * close reason that is not (1007); a message above the maximum (1009, told
 * by the header, before its payload is read). After a close frame the parser
 * reads nothing more.
 *
 * @module
 */

/** Opcode of a continuation frame. */
export const OP_CONTINUATION = 0x0;
/** Opcode of a text frame. */
export const OP_TEXT = 0x1;
/** Opcode of a binary frame. */
export const OP_BINARY = 0x2;
/** Opcode of a close frame. */
export const OP_CLOSE = 0x8;
/** Opcode of a ping frame. */
export const OP_PING = 0x9;
/** Opcode of a pong frame. */
export const OP_PONG = 0xa;

/** Close code: the endpoint is going away (server shutdown, idle). */
export const CLOSE_GOING_AWAY = 1001;
/** Close code: protocol error. */
export const CLOSE_PROTOCOL_ERROR = 1002;
/** Close code: no status code was present (never sent). */
export const CLOSE_NO_STATUS = 1005;
/** Close code: the connection was lost without a close frame (never sent). */
export const CLOSE_ABNORMAL = 1006;
/** Close code: a text message was not UTF-8. */
export const CLOSE_INVALID_DATA = 1007;
/** Close code: a message was too big. */
export const CLOSE_TOO_BIG = 1009;

/** Default largest message (`--max-ws-message`): 16 MiB. */
export const DEFAULT_MAX_MESSAGE = 16 << 20;
/** The smallest message limit allowed: 125 bytes, a control frame's largest payload. */
export const MIN_MAX_MESSAGE = 125;
/** The largest message limit allowed: 2^31 - 1 bytes. */
export const MAX_MAX_MESSAGE = 2 ** 31 - 1;

/** Largest control frame payload. */
const MAX_CONTROL = 125;

/** Whether `code` may travel in a close frame (RFC 6455 7.4, and the IANA registry). */
export function isValidCloseCode(code: number): boolean {
  if (code >= 3000 && code <= 4999) return true;
  return code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006;
}

/** What the parser hands on. Payload views are valid during the call only. */
export interface FrameSink {
  /** A whole text message, `size` bytes of UTF-8. */
  onText(text: string, size: number): void;
  /** A whole binary message, in a buffer of its own (the sink may keep it). */
  onBinary(data: Uint8Array<ArrayBuffer>): void;
  /** A ping: `payload[start, end)`. */
  onPing(payload: Uint8Array, start: number, end: number): void;
  /** A pong: `payload[start, end)`. */
  onPong(payload: Uint8Array, start: number, end: number): void;
  /** A close frame: its code (1005 when it had none) and reason. The parser stops. */
  onClose(code: number, reason: string): void;
  /** The peer broke the protocol: close with `code` (1002, 1007, 1009). The parser stops. */
  onFail(code: number, reason: string): void;
}

const S_HEADER = 0;
const S_PAYLOAD = 1;
const S_DONE = 2;

/** Single-shot decoder: no state, shared. `ignoreBOM`: a leading U+FEFF is message text. */
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const STREAM = { stream: true };

/**
 * XORs `buf[start, end)` with the mask `m` (4 bytes, as a big-endian int),
 * starting at `phase` bytes into it; returns the phase after.
 */
export function unmask(
  buf: Uint8Array,
  start: number,
  end: number,
  m: number,
  phase: number,
): number {
  const m0 = (m >>> 24) & 0xff, m1 = (m >>> 16) & 0xff, m2 = (m >>> 8) & 0xff, m3 = m & 0xff;
  let i = start;
  // Up to the next whole mask.
  while (i < end && phase !== 0) {
    buf[i++] ^= phase === 1 ? m1 : phase === 2 ? m2 : m3;
    phase = (phase + 1) & 3;
  }
  const whole = end - ((end - i) & 3);
  for (; i < whole; i += 4) {
    buf[i] ^= m0;
    buf[i + 1] ^= m1;
    buf[i + 2] ^= m2;
    buf[i + 3] ^= m3;
  }
  while (i < end) {
    buf[i++] ^= phase === 0 ? m0 : phase === 1 ? m1 : phase === 2 ? m2 : m3;
    phase = (phase + 1) & 3;
  }
  return phase;
}

/** An incremental parser of the frames a client sends. */
export class FrameParser {
  readonly #sink: FrameSink;
  readonly #maxMessage: number;
  #state = S_HEADER;
  /** A header split across reads, gathered here (14 bytes at most). */
  #hdr: Uint8Array | null = null;
  #hdrLength = 0;
  // The frame being read.
  #fin = false;
  #opcode = 0;
  #remaining = 0;
  #mask = 0;
  #phase = 0;
  // The message being gathered (0: none; OP_TEXT or OP_BINARY).
  #message = 0;
  #messageBytes = 0;
  #decoder: TextDecoder | null = null;
  #text = "";
  #binary: Uint8Array<ArrayBuffer> | null = null;
  // A control frame split across reads.
  #control: Uint8Array | null = null;
  #controlLength = 0;

  /**
   * @param sink receives messages, control frames and failures
   * @param maxMessage largest message in bytes (1009 above)
   */
  constructor(sink: FrameSink, maxMessage: number = DEFAULT_MAX_MESSAGE) {
    this.#sink = sink;
    this.#maxMessage = maxMessage;
  }

  /** Whether the parser has stopped (a close frame, or a failure). */
  get done(): boolean {
    return this.#state === S_DONE;
  }

  /** Stops the parser: nothing more is read (the socket closed). */
  stop(): void {
    this.#state = S_DONE;
    this.#decoder = null;
    this.#binary = null;
    this.#text = ""; // a message cut short: not kept alive by a socket the app holds
  }

  /**
   * Parses `buf[start, end)`. The bytes are unmasked in place (`buf` is the
   * connection's read buffer, ours during the call).
   */
  execute(buf: Uint8Array, start: number, end: number): void {
    let i = start;
    while (i < end) {
      const state = this.#state;
      if (state === S_HEADER) {
        if (this.#hdrLength === 0) {
          const need = end - i >= 2 ? headerLength(buf[i + 1]) : 14;
          if (end - i >= need) {
            if (!this.#header(buf, i)) return;
            i += need;
            continue;
          }
        }
        i = this.#gatherHeader(buf, i, end);
        continue;
      }
      if (state === S_DONE) return;
      i = this.#payload(buf, i, end);
    }
  }

  /** Copies header bytes into #hdr until the header is whole; parses it then. */
  #gatherHeader(buf: Uint8Array, i: number, end: number): number {
    const hdr = this.#hdr ??= new Uint8Array(14);
    while (i < end) {
      hdr[this.#hdrLength++] = buf[i++];
      if (this.#hdrLength >= 2 && this.#hdrLength === headerLength(hdr[1])) {
        this.#hdrLength = 0;
        this.#header(hdr, 0);
        return i;
      }
    }
    return i;
  }

  /** Reads a whole header at `b[p]`; false when the frame is refused (the parser stopped). */
  #header(b: Uint8Array, p: number): boolean {
    const b0 = b[p];
    const b1 = b[p + 1];
    if ((b0 & 0x70) !== 0) return this.#fail(CLOSE_PROTOCOL_ERROR, "reserved bits set");
    if ((b1 & 0x80) === 0) return this.#fail(CLOSE_PROTOCOL_ERROR, "unmasked client frame");
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    let length = b1 & 0x7f;
    let q = p + 2;
    if (length === 126) {
      length = (b[q] << 8) | b[q + 1];
      q += 2;
    } else if (length === 127) {
      const high = ((b[q] << 24) | (b[q + 1] << 16) | (b[q + 2] << 8) | b[q + 3]) >>> 0;
      const low = ((b[q + 4] << 24) | (b[q + 5] << 16) | (b[q + 6] << 8) | b[q + 7]) >>> 0;
      if (high >= 0x80000000) {
        return this.#fail(CLOSE_PROTOCOL_ERROR, "length with its top bit set");
      }
      length = high * 4294967296 + low;
      q += 8;
    }
    this.#mask = ((b[q] << 24) | (b[q + 1] << 16) | (b[q + 2] << 8) | b[q + 3]) | 0;
    this.#phase = 0;
    if (opcode >= 8) {
      if (opcode > OP_PONG) return this.#fail(CLOSE_PROTOCOL_ERROR, `unknown opcode ${opcode}`);
      if (!fin) return this.#fail(CLOSE_PROTOCOL_ERROR, "fragmented control frame");
      if (length > MAX_CONTROL) {
        return this.#fail(CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes");
      }
      this.#controlLength = 0;
    } else if (opcode === OP_CONTINUATION) {
      if (this.#message === 0) {
        return this.#fail(CLOSE_PROTOCOL_ERROR, "continuation frame without a message");
      }
    } else if (opcode <= OP_BINARY) {
      if (this.#message !== 0) {
        return this.#fail(CLOSE_PROTOCOL_ERROR, "new message before the last one ended");
      }
      this.#messageBytes = 0;
    } else {
      return this.#fail(CLOSE_PROTOCOL_ERROR, `unknown opcode ${opcode}`);
    }
    if (opcode < 8 && this.#messageBytes + length > this.#maxMessage) {
      return this.#fail(CLOSE_TOO_BIG, `message over ${this.#maxMessage} bytes`);
    }
    this.#fin = fin;
    this.#opcode = opcode;
    this.#remaining = length;
    this.#state = S_PAYLOAD;
    if (length === 0) this.#payload(b, 0, 0); // complete now (an empty frame)
    return this.#state !== S_DONE;
  }

  /** Payload bytes at `buf[i, end)`; returns where the next frame starts. */
  #payload(buf: Uint8Array, i: number, end: number): number {
    const opcode = this.#opcode;
    const remaining = this.#remaining;
    const n = end - i < remaining ? end - i : remaining;
    const to = i + n;
    if (n > 0) this.#phase = unmask(buf, i, to, this.#mask, this.#phase);
    this.#remaining = remaining - n;
    const complete = this.#remaining === 0;
    if (opcode >= 8) {
      this.#controlFrame(buf, i, to, complete);
    } else if (complete && this.#fin && opcode !== OP_CONTINUATION && this.#message === 0) {
      // The common case: a whole single-frame message in this read (no
      // earlier part of it was gathered).
      this.#state = S_HEADER;
      if (opcode === OP_TEXT) {
        let text: string;
        try {
          text = textDecoder.decode(buf.subarray(i, to));
        } catch {
          this.#fail(CLOSE_INVALID_DATA, "text message is not UTF-8");
          return end;
        }
        this.#sink.onText(text, n);
      } else {
        this.#sink.onBinary(buf.slice(i, to));
      }
    } else {
      this.#dataChunk(buf, i, to, complete);
    }
    return to;
  }

  /** Part of a message that spans reads or fragments. */
  #dataChunk(buf: Uint8Array, i: number, to: number, complete: boolean): void {
    if (this.#opcode !== OP_CONTINUATION && this.#message === 0) {
      this.#message = this.#opcode;
      if (this.#message === OP_TEXT) {
        this.#decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
        this.#text = "";
      } else {
        // One frame: its size is the message's. Fragments: a resizable buffer
        // (grown and trimmed in place, never copied again), the first
        // frame's size to start with.
        const first = this.#remaining + (to - i);
        this.#binary = new Uint8Array(
          this.#fin ? new ArrayBuffer(first) : new ArrayBuffer(first, {
            maxByteLength: this.#maxMessage,
          }),
        );
      }
    }
    const n = to - i;
    if (this.#message === OP_TEXT) {
      try {
        if (n > 0) this.#text += this.#decoder!.decode(buf.subarray(i, to), STREAM);
        if (complete && this.#fin) this.#text += this.#decoder!.decode();
      } catch {
        this.#fail(CLOSE_INVALID_DATA, "text message is not UTF-8");
        return;
      }
    } else if (n > 0) {
      const at = this.#messageBytes;
      const bin = this.#binary!;
      if (at + n > bin.length) {
        // Only a resizable one is ever short (the view tracks its length).
        bin.buffer.resize(
          Math.min(this.#maxMessage, Math.max(at + n + this.#remaining, bin.length * 2)),
        );
      }
      bin.set(buf.subarray(i, to), at);
    }
    this.#messageBytes += n;
    if (!complete) return;
    this.#state = S_HEADER;
    if (!this.#fin) return;
    const kind = this.#message;
    this.#message = 0;
    if (kind === OP_TEXT) {
      const text = this.#text;
      this.#text = "";
      this.#decoder = null;
      this.#sink.onText(text, this.#messageBytes);
    } else {
      const bin = this.#binary!;
      this.#binary = null;
      if (bin.buffer.resizable) bin.buffer.resize(this.#messageBytes);
      this.#sink.onBinary(bin);
    }
  }

  #controlFrame(buf: Uint8Array, i: number, to: number, complete: boolean): void {
    let data = buf;
    let from = i;
    let end = to;
    if (!complete || this.#controlLength > 0) {
      // Split across reads: gather it (125 bytes at most).
      const ctl = this.#control ??= new Uint8Array(MAX_CONTROL);
      ctl.set(buf.subarray(i, to), this.#controlLength);
      this.#controlLength += to - i;
      if (!complete) return;
      data = ctl;
      from = 0;
      end = this.#controlLength;
      this.#controlLength = 0;
    }
    this.#state = S_HEADER;
    const opcode = this.#opcode;
    if (opcode === OP_PING) this.#sink.onPing(data, from, end);
    else if (opcode === OP_PONG) this.#sink.onPong(data, from, end);
    else this.#closeFrame(data, from, end);
  }

  #closeFrame(data: Uint8Array, from: number, end: number): void {
    const n = end - from;
    if (n === 0) {
      this.stop();
      this.#sink.onClose(CLOSE_NO_STATUS, "");
      return;
    }
    if (n === 1) {
      this.#fail(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload");
      return;
    }
    const code = (data[from] << 8) | data[from + 1];
    if (!isValidCloseCode(code)) {
      this.#fail(CLOSE_PROTOCOL_ERROR, `invalid close code ${code}`);
      return;
    }
    let reason: string;
    try {
      reason = textDecoder.decode(data.subarray(from + 2, end));
    } catch {
      this.#fail(CLOSE_INVALID_DATA, "close reason is not UTF-8");
      return;
    }
    this.stop();
    this.#sink.onClose(code, reason);
  }

  /** Stops and reports; returns false (for `return this.#fail(...)`). */
  #fail(code: number, reason: string): false {
    this.stop();
    this.#message = 0;
    this.#sink.onFail(code, reason);
    return false;
  }
}

/** A client frame header's length from its second byte (masked frames carry 4 mask bytes). */
function headerLength(b1: number): number {
  const len = b1 & 0x7f;
  return (len < 126 ? 2 : len === 126 ? 4 : 10) + ((b1 & 0x80) !== 0 ? 4 : 0);
}

/** Bytes a server frame header takes for a payload of `length`. */
export function frameHeaderLength(length: number): number {
  return length < 126 ? 2 : length < 65536 ? 4 : 10;
}

/**
 * Writes an unmasked (server) frame header for `opcode` and `length` at
 * `out[at]`, final fragment; returns its length (2, 4 or 10).
 */
export function writeFrameHeader(
  out: Uint8Array,
  at: number,
  opcode: number,
  length: number,
): number {
  out[at] = 0x80 | opcode;
  if (length < 126) {
    out[at + 1] = length;
    return 2;
  }
  if (length < 65536) {
    out[at + 1] = 126;
    out[at + 2] = length >>> 8;
    out[at + 3] = length & 0xff;
    return 4;
  }
  out[at + 1] = 127;
  const high = Math.floor(length / 4294967296);
  const low = length >>> 0;
  out[at + 2] = high >>> 24;
  out[at + 3] = (high >>> 16) & 0xff;
  out[at + 4] = (high >>> 8) & 0xff;
  out[at + 5] = high & 0xff;
  out[at + 6] = low >>> 24;
  out[at + 7] = (low >>> 16) & 0xff;
  out[at + 8] = (low >>> 8) & 0xff;
  out[at + 9] = low & 0xff;
  return 10;
}
