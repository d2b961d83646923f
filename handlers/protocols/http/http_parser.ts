/**
 * Incremental HTTP/1.1 request parser (RFC 9112), in the spirit of
 * nodejs/http-parser and llhttp: a byte-at-a-time state machine whose whole
 * state lives in numeric fields, so a request may be split at any byte across
 * reads and no byte is ever scanned twice.
 *
 * It sits on the per-request hot path, so in the steady state it allocates
 * nothing: no strings, no decoders, no arrays, no closures. Header names that
 * matter are recognised by an incremental case-insensitive byte match and the
 * request target is copied into a buffer the parser owns, so routes can be
 * matched by bytes. Bodies are counted and discarded.
 *
 * App mode (`captureHeaders: true`) is for a layer that builds request
 * objects: the head's bytes are copied into {@link HttpParser.headBytes} and
 * every header field is recorded as offsets in {@link HttpParser.fields};
 * {@link HttpParserSink.onHead} and {@link HttpParserSink.onBody} deliver the
 * head before the body and the decoded body bytes. Without it, the only cost
 * of app mode is a few predictable branches per request.
 *
 * @module
 */

import { latin1Bytes } from "./request.ts";

/** Method code for any syntactically valid method not listed below (methods are case-sensitive). */
export const METHOD_OTHER = 0;
/** Method code for `GET`. */
export const METHOD_GET = 1;
/** Method code for `HEAD`. */
export const METHOD_HEAD = 2;
/** Method code for `POST`. */
export const METHOD_POST = 3;
/** Method code for `PUT`. */
export const METHOD_PUT = 4;
/** Method code for `DELETE`. */
export const METHOD_DELETE = 5;
/** Method code for `OPTIONS`. */
export const METHOD_OPTIONS = 6;
/** Method code for `PATCH`. */
export const METHOD_PATCH = 7;

/** Limits (and the app-mode switch) of an {@link HttpParser}. */
export interface HttpParserLimits {
  /**
   * Largest header section (request line, header fields and the final CRLF) in
   * bytes, counted from the method's first byte; more is answered with 431, or
   * with 414 when the budget runs out inside the request target. Also bounds a
   * chunked trailer section, and the chunk extensions of one request taken
   * together (with any chunk-size digits past the 16th of a line). Default 16384.
   */
  maxHeaderBytes: number;
  /**
   * Largest body in bytes (decoded size for chunked); more is answered with 413.
   * At most 2^48 so that all arithmetic stays exact. Default 1048576.
   */
  maxBody: number;
  /**
   * App mode: copy the head into {@link HttpParser.headBytes}, record every header
   * field in {@link HttpParser.fields} and keep the method's bytes. Default false.
   */
  captureHeaders?: boolean;
}

/**
 * Receives the results of {@link HttpParser.execute}. `onHead` and `onBody` are
 * optional, looked up once when the parser is made, and called whether or not
 * `captureHeaders` is set.
 */
export interface HttpParserSink {
  /**
   * A whole request (head, and body if any, fully read) is complete. Parser fields
   * describe it during this call only (in app mode the captured head stays valid
   * from onHead until this call returns). Return false to stop parsing (e.g. the
   * connection is going to close); execute then returns at once, with the index
   * just after this request.
   */
  onRequest(parser: HttpParser): boolean;
  /**
   * The input is invalid; status is 400, 413, 414, 431, 501 or 505; reason a short
   * English phrase for logs. The parser is dead afterwards (execute returns at once)
   * until reset().
   */
  onError(status: number, reason: string): void;
  /**
   * The head is complete and valid, and no body byte has been consumed yet. Method,
   * target, version, keepAlive, contentLength, chunked, expectContinue and, in app
   * mode, the captured fields are readable during the call. Return false to stop:
   * execute returns the index just after the head, and a later execute (even of an
   * empty range, for a request without a body) goes on with the body and then
   * onRequest. Must not call reset().
   */
  onHead?(parser: HttpParser): boolean;
  /**
   * Decoded body bytes, `data[start, end)`, in order: a Content-Length body as it
   * arrives, a chunked body without its framing (sizes, extensions, CRLFs and
   * trailers removed). `data` is the buffer given to execute, valid during this call
   * only. Never called with an empty range. Without onBody the body is discarded.
   */
  onBody?(data: Uint8Array, start: number, end: number): void;
}

const HTAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const DQUOTE = 0x22;
const COMMA = 0x2c;
const DOT = 0x2e;
const COLON = 0x3a;
const SEMI = 0x3b;
const EQUALS = 0x3d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const BACKSLASH = 0x5c;
const DEL = 0x7f;
const ZERO = 0x30;
const ONE = 0x31;
const LOWER_C = 0x63;
const LOWER_E = 0x65;
const LOWER_H = 0x68;
const LOWER_K = 0x6b;
const LOWER_N = 0x6e;
const LOWER_T = 0x74;

/** Byte classes, as bit flags in CLASS. */
const TCHAR = 1;
/** HTAB, SP, VCHAR, obs-text: what a field value may contain. */
const VALUE = 2;
/** What a quoted-string may contain unescaped (qdtext). */
const QDTEXT = 4;
/** What a Host's reg-name or IPv4address may contain: unreserved, sub-delims, "%" (RFC 3986). */
const REGNAME = 8;
const DIGIT = 16;
/** What an IP-literal may contain between its brackets: the reg-name bytes and ":". */
const LITERAL = 32;

const CLASS = new Uint8Array(256);
/** Hex digit values, -1 for other bytes. */
const HEX = new Int8Array(256).fill(-1);
{
  const tokens = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  for (let k = 0; k < tokens.length; k++) CLASS[tokens.charCodeAt(k)] |= TCHAR;
  for (let c = 0x21; c <= 0xff; c++) {
    if (c === DEL) continue;
    CLASS[c] |= VALUE;
    if (c !== DQUOTE && c !== BACKSLASH) CLASS[c] |= QDTEXT;
  }
  CLASS[HTAB] |= VALUE | QDTEXT;
  CLASS[SP] |= VALUE | QDTEXT;
  const regName = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%";
  for (let k = 0; k < regName.length; k++) CLASS[regName.charCodeAt(k)] |= REGNAME | LITERAL;
  CLASS[COLON] |= LITERAL;
  for (let k = 0; k < 10; k++) CLASS[ZERO + k] |= DIGIT;
  for (let k = 0; k < 10; k++) HEX[ZERO + k] = k;
  for (let k = 0; k < 6; k++) HEX[0x41 + k] = HEX[0x61 + k] = 10 + k;
}

/** Up to 4 bytes of a method name packed big-endian, so a name is compared in two integer tests. */
function pack(s: string): number {
  let v = 0;
  for (let k = 0; k < s.length; k++) v = (v << 8) | s.charCodeAt(k);
  return v;
}

const P_GET = pack("GET");
const P_PUT = pack("PUT");
const P_HEAD = pack("HEAD");
const P_POST = pack("POST");
const P_PATC = pack("PATC");
const P_H = pack("H");
const P_DELE = pack("DELE");
const P_TE = pack("TE");
const P_OPTI = pack("OPTI");
const P_ONS = pack("ONS");

function methodCode(len: number, lo: number, hi: number): number {
  switch (len) {
    case 3:
      return lo === P_GET ? METHOD_GET : lo === P_PUT ? METHOD_PUT : METHOD_OTHER;
    case 4:
      return lo === P_HEAD ? METHOD_HEAD : lo === P_POST ? METHOD_POST : METHOD_OTHER;
    case 5:
      return lo === P_PATC && hi === P_H ? METHOD_PATCH : METHOD_OTHER;
    case 6:
      return lo === P_DELE && hi === P_TE ? METHOD_DELETE : METHOD_OTHER;
    case 7:
      return lo === P_OPTI && hi === P_ONS ? METHOD_OPTIONS : METHOD_OTHER;
  }
  return METHOD_OTHER;
}

const HTTP_SLASH = latin1Bytes("HTTP/");

/*
 * Header names and list words we react to, lower case, back to back. A match is a
 * cursor into the table plus the end offset of the candidate; the end offset also
 * identifies the word once matched, and -1 means "no candidate".
 */
const NAMES = latin1Bytes("content-lengthtransfer-encodingconnectionhostexpect");
const N_CONTENT_LENGTH = 14;
const N_TRANSFER_ENCODING = 31;
const N_CONNECTION = 41;
const N_HOST = 45;
const N_EXPECT = 51;
/** "content-length" and "connection" share "con"; they part at offset 3. */
const N_SPLIT = 3;

const WORDS = latin1Bytes("chunkedclosekeep-alive100-continue");
const W_CHUNKED = 7;
const W_CLOSE = 12;
const W_KEEP_ALIVE = 22;
const W_100_CONTINUE = 34;

/** RFC 9112 §2.2 tolerates CRLFs before a request line; a stream of them is abuse. */
const MAX_EMPTY_LINES = 8;
/** Keeps chunk-size and Content-Length arithmetic within exact doubles (size * 16 + 15 < 2^53). */
const MAX_BODY_LIMIT = 2 ** 48;
/**
 * Hex digits of a chunk size that cost nothing; more (leading zeros: more significant
 * digits would exceed maxBody) are charged to the request's chunk-extension budget, so
 * chunk lines stay bounded however many chunks a body has.
 */
const FREE_SIZE_DIGITS = 16;
/** An empty buffer for parsers that capture nothing. */
const NO_BYTES = new Uint8Array(0);
const NO_FIELDS = new Int32Array(0);

const S_START = 0;
const S_START_LF = 1;
// From S_METHOD to S_LIMITED_LAST, every byte counts against maxHeaderBytes.
const S_METHOD = 2;
const S_TARGET = 3;
const S_VERSION = 4;
const S_VER_MAJOR = 5;
const S_VER_DOT = 6;
const S_VER_MINOR = 7;
const S_REQ_CR = 8;
const S_REQ_LF = 9;
const S_FIELD_START = 10;
const S_NAME = 11;
const S_TRAILER_NAME = 12;
const S_VALUE = 13;
const S_VALUE_CL = 14;
const S_VALUE_LIST = 15;
const S_VALUE_HOST = 16;
/** A Host value goes on (after a read boundary or in an unusual shape): hostPhase says where. */
const S_HOST_REST = 17;
const S_FIELD_LF = 18;
const S_HEAD_LF = 19;
const S_LIMITED_LAST = 19;
const S_BODY = 20;
const S_CHUNK_SIZE_FIRST = 21;
const S_CHUNK_SIZE = 22;
// From S_EXT_FIRST to S_EXT_LAST, every byte counts against the chunk-extension budget.
const S_EXT_FIRST = 23;
const S_EXT_BWS = 23;
const S_EXT_NAME_START = 24;
const S_EXT_NAME = 25;
const S_EXT_VALUE_START = 26;
const S_EXT_TOKEN = 27;
const S_EXT_QUOTED = 28;
const S_EXT_ESCAPE = 29;
const S_EXT_AFTER = 30;
const S_EXT_LAST = 30;
const S_CHUNK_SIZE_LF = 31;
const S_CHUNK_DATA = 32;
const S_CHUNK_DATA_CR = 33;
const S_CHUNK_DATA_LF = 34;
// The last two are checked once per execute call, not per byte.
const S_DEAD = 35;
/** onHead stopped a request without a body: onRequest is due at the next execute. */
const S_HEAD_DONE = 36;

/**
 * Where the Host value parser is: before the host, in a reg-name, in the port, in an
 * IP-literal, just after one, in trailing whitespace. Phases only move forward.
 */
const H_LEAD = 0;
const H_NAME = 1;
const H_PORT = 2;
const H_LITERAL = 3;
const H_AFTER_LITERAL = 4;
const H_TRAIL = 5;

/** Which field value sub-parser is running, for headers whose value matters. */
const LIST_TE = 1;
const LIST_CONNECTION = 2;
const LIST_EXPECT = 3;
const F_CLOSE = 1;
const F_KEEP_ALIVE = 2;
const F_EXPECT_CONTINUE = 4;

const METHOD_NAMES = ["", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

/**
 * An incremental, allocation-free HTTP/1.1 request parser for one connection.
 * Feed it bytes with {@link HttpParser.execute}; it reports each complete request
 * (or the first error) to its sink.
 */
export class HttpParser {
  /** METHOD_* code of the current request. */
  method: number = METHOD_OTHER;
  /** Bytes of the request target; valid: [0, targetLength). Grows up to maxHeaderBytes. */
  target: Uint8Array;
  /** Length of the request target in {@link HttpParser.target}. */
  targetLength = 0;
  /**
   * 0 for HTTP/1.0, 1 for HTTP/1.1 and for HTTP/1.2 to 1.9, which RFC 9110 §2.5 says to
   * process as the highest minor version implemented.
   */
  versionMinor = 1;
  /**
   * 1.1: true unless a Connection header lists "close";
   * 1.0: false unless it lists "keep-alive" (and not "close").
   */
  keepAlive = false;
  /** The Content-Length, or -1 when absent. */
  contentLength: number = -1;
  /** Whether the body uses the chunked transfer coding. */
  chunked = false;
  /** Body bytes seen for the current request (decoded size for chunked). */
  bodyBytes = 0;
  /**
   * The head had `Expect: 100-continue` (a list member, any case) and is HTTP/1.1
   * (RFC 9110 §10.1.1: ignored in HTTP/1.0). Set once the head is complete.
   */
  expectContinue = false;
  /**
   * App mode: the head's bytes, from the method's first byte (so the method is
   * `[0, methodLength)`) to the end of the last header field; {@link HttpParser.fields}
   * points into it. Never longer than maxHeaderBytes; replaced by a larger array when it
   * grows, so read it afresh for each request. Empty without captureHeaders.
   */
  headBytes: Uint8Array = NO_BYTES;
  /**
   * App mode: field `k` (0 <= k < fieldCount) is `headBytes[fields[4k], fields[4k+1])`
   * (name, as sent) and `headBytes[fields[4k+2], fields[4k+3])` (value, without leading
   * and trailing whitespace), in the order received; repeated fields stay separate.
   * Trailer fields are not recorded. Replaced by a larger array when it grows.
   */
  fields: Int32Array = NO_FIELDS;
  /** App mode: the number of header fields in {@link HttpParser.fields}. */
  fieldCount = 0;

  private readonly sink: HttpParserSink;
  private readonly maxHeaderBytes: number;
  private readonly maxBody: number;
  private readonly capture: boolean;
  private readonly hasOnHead: boolean;
  private readonly hasOnBody: boolean;
  /** captureHeaders or onHead: the end of a head has work to do. */
  private readonly headHooks: boolean;

  private state = S_START;
  /** Header (or trailer) bytes still allowed from the current position. */
  private headLeft = 0;
  private emptyLines = 0;
  /** Method name: length and its first 4 and next 3 bytes packed. */
  private mLen = 0;
  private mLo = 0;
  private mHi = 0;
  private vIdx = 0;
  private inTrailer = false;
  /** App mode: the head of the current request is being copied. */
  private capturing = false;
  /** App mode: where in the current input the bytes not yet copied into headBytes start. */
  private mark = 0;
  /** App mode: bytes of the head copied into headBytes so far. */
  private headLen = 0;
  /** App mode: where the current field line starts in headBytes (after the first). */
  private lineStart = 0;
  /** Header name match cursor into NAMES, and the candidate's end (-1: none). */
  private namePos = 0;
  private nameEnd = -1;
  /** Content-Length element: 0 before digits, 1 in digits, 2 after them. */
  private clPhase = 0;
  private clValue = 0;
  private listKind = 0;
  /** List element: 0 before it, 1 inside it, 2 in whitespace after it. */
  private listPhase = 0;
  private wordPos = 0;
  private wordEnd = -1;
  private hostCount = 0;
  private hostPhase = H_LEAD;
  private teSeen = false;
  private teChunked = 0;
  private teOther = 0;
  /** F_* bits from the Connection and Expect fields. */
  private listFlags = 0;
  /** Body bytes still to come (Content-Length body or current chunk). */
  private remaining = 0;
  /** Chunk-extension bytes (and chunk-size digits past the free ones) still allowed. */
  private chunkLineLeft = 0;
  /** Hex digits of the current chunk size. */
  private sizeDigits = 0;

  /**
   * Makes a parser that feeds `sink`.
   *
   * @param sink receives requests and errors.
   * @param limits overrides of the default limits.
   * @throws {RangeError} when a limit is not a usable integer.
   */
  constructor(sink: HttpParserSink, limits?: Partial<HttpParserLimits>) {
    const maxHeaderBytes = limits?.maxHeaderBytes ?? 16384;
    const maxBody = limits?.maxBody ?? 1048576;
    if (!Number.isSafeInteger(maxHeaderBytes) || maxHeaderBytes < 1 || maxHeaderBytes > 2 ** 30) {
      throw new RangeError(`maxHeaderBytes must be an integer in [1, 2^30]: ${maxHeaderBytes}`);
    }
    if (!Number.isSafeInteger(maxBody) || maxBody < 0 || maxBody > MAX_BODY_LIMIT) {
      throw new RangeError(`maxBody must be an integer in [0, 2^48]: ${maxBody}`);
    }
    this.sink = sink;
    this.maxHeaderBytes = maxHeaderBytes;
    this.maxBody = maxBody;
    this.capture = limits?.captureHeaders === true;
    this.hasOnHead = typeof sink.onHead === "function";
    this.hasOnBody = typeof sink.onBody === "function";
    this.headHooks = this.capture || this.hasOnHead;
    // Small at first: an idle connection should not hold maxHeaderBytes. The
    // target is part of the header section, so it never outgrows that.
    this.target = new Uint8Array(Math.min(128, maxHeaderBytes));
    if (this.capture) {
      this.headBytes = new Uint8Array(Math.min(512, maxHeaderBytes));
      this.fields = new Int32Array(4 * 32);
    }
    this.headLeft = maxHeaderBytes;
  }

  /** True when between requests (no partial request buffered in the state machine). */
  get idle(): boolean {
    return this.state === S_START;
  }

  /** Length of the method name of the current request. */
  get methodLength(): number {
    return this.mLen;
  }

  /**
   * App mode: the array holding the method's bytes, `[0, methodLength)` (it is
   * {@link HttpParser.headBytes}). Empty without captureHeaders.
   */
  get methodBytes(): Uint8Array {
    return this.headBytes;
  }

  /**
   * The method as text, any token (case kept). Allocates only for methods other than
   * the METHOD_* ones. Without captureHeaders, a METHOD_OTHER name longer than 7
   * bytes is not kept and gives "".
   */
  methodString(): string {
    if (this.method !== METHOD_OTHER) return METHOD_NAMES[this.method];
    const len = this.mLen;
    let out = "";
    if (this.capture) {
      const h = this.headBytes;
      for (let k = 0; k < len; k++) out += String.fromCharCode(h[k]);
      return out;
    }
    if (len > 7) return "";
    const lo = len < 4 ? len : 4;
    for (let k = 0; k < lo; k++) {
      out += String.fromCharCode((this.mLo >>> (8 * (lo - 1 - k))) & 0xff);
    }
    for (let k = 4; k < len; k++) {
      out += String.fromCharCode((this.mHi >>> (8 * (len - 1 - k))) & 0xff);
    }
    return out;
  }

  /** Doubles the target buffer until `need` bytes fit (up to maxHeaderBytes). */
  private growTarget(need: number): Uint8Array {
    let size = this.target.length * 2;
    while (size < need) size *= 2;
    const t = new Uint8Array(Math.min(size, this.maxHeaderBytes));
    t.set(this.target.subarray(0, this.targetLength));
    this.target = t;
    return t;
  }

  /** App mode: appends buf[from, to) to headBytes. */
  private copyHead(buf: Uint8Array, from: number, to: number): void {
    const n = this.headLen;
    const need = n + (to - from);
    let h = this.headBytes;
    if (need > h.length) {
      let size = h.length * 2;
      while (size < need) size *= 2;
      const grown = new Uint8Array(Math.min(size, this.maxHeaderBytes));
      grown.set(h.subarray(0, n));
      this.headBytes = h = grown;
    }
    // A byte loop, not set(subarray()): no view allocated per field.
    for (let k = from, o = n; k < to; k++, o++) h[o] = buf[k];
    this.headLen = need;
  }

  /** App mode: a field line ends at buf[i] (its CR): copies the head up to there, records the field. */
  private endField(buf: Uint8Array, i: number): void {
    this.copyHead(buf, this.mark, i);
    this.mark = i;
    const h = this.headBytes;
    const n = this.fieldCount;
    // The request line is exactly method SP target SP HTTP/d.d CRLF.
    const nameStart = n === 0 ? this.mLen + this.targetLength + 12 : this.lineStart;
    let nameEnd = nameStart;
    while (h[nameEnd] !== COLON) nameEnd++; // a name is a token: the first colon ends it
    let vs = nameEnd + 1;
    let ve = this.headLen;
    while (vs < ve && (h[vs] === SP || h[vs] === HTAB)) vs++;
    while (ve > vs && (h[ve - 1] === SP || h[ve - 1] === HTAB)) ve--;
    let f = this.fields;
    if (4 * n + 4 > f.length) {
      const grown = new Int32Array(f.length * 2);
      grown.set(f);
      this.fields = f = grown;
    }
    f[4 * n] = nameStart;
    f[4 * n + 1] = nameEnd;
    f[4 * n + 2] = vs;
    f[4 * n + 3] = ve;
    this.fieldCount = n + 1;
    this.lineStart = this.headLen + 2; // after this line's CRLF
  }

  /**
   * App mode or onHead: the head ended just before buf[i] and `s` is the state that
   * follows. Finishes the copy and calls onHead; false when it asked to stop.
   */
  private headDone(buf: Uint8Array, i: number, s: number): boolean {
    if (this.capturing) {
      this.copyHead(buf, this.mark, i);
      this.capturing = false;
    }
    if (!this.hasOnHead) return true;
    // Stored first: the sink sees a parser that is not idle, and a stop leaves it here.
    this.state = s === S_START ? S_HEAD_DONE : s;
    return this.sink.onHead!(this);
  }

  /**
   * Goes on with a Host value in phase `ph` from buf[i], where the inline path stopped
   * (at `stop`, or at a byte that is not the CR ending a name or port). Returns `stop`
   * (phase saved: the value goes on in the next read), the index of the CR that ends a
   * valid value, or -1 - the index of the byte that makes it invalid.
   */
  private hostSlow(buf: Uint8Array, i: number, stop: number, ph: number): number {
    for (; i < stop; i++) {
      const b = buf[i];
      const ows = b === SP || b === HTAB;
      if (b === CR) {
        if (ph === H_LITERAL) break;
        return i;
      }
      if (ph === H_LEAD) {
        if ((CLASS[b] & REGNAME) !== 0) ph = H_NAME;
        else if (b === COLON) ph = H_PORT;
        else if (b === LBRACKET) ph = H_LITERAL;
        else if (!ows) break;
      } else if (ph === H_NAME) {
        if (b === COLON) ph = H_PORT;
        else if (ows) ph = H_TRAIL;
        else if ((CLASS[b] & REGNAME) === 0) break;
      } else if (ph === H_PORT) {
        if (ows) ph = H_TRAIL;
        else if ((CLASS[b] & DIGIT) === 0) break;
      } else if (ph === H_LITERAL) {
        if (b === RBRACKET) ph = H_AFTER_LITERAL;
        else if ((CLASS[b] & LITERAL) === 0) break;
      } else if (ph === H_AFTER_LITERAL) {
        if (b === COLON) ph = H_PORT;
        else if (ows) ph = H_TRAIL;
        else break;
      } else if (!ows) break; // H_TRAIL
    }
    if (i < stop) return -1 - i;
    this.hostPhase = ph;
    return stop;
  }

  /** Back to the initial state (new connection). */
  reset(): void {
    this.state = S_START;
    this.headLeft = this.maxHeaderBytes;
    this.capturing = false;
    this.clearRequest();
  }

  /**
   * Feed buf[start, end). Calls sink.onRequest for every request completed in this range,
   * in order. Returns the index where parsing stopped (== end unless the sink returned false
   * or an error occurred; then the index after that request, or of the offending byte).
   */
  execute(buf: Uint8Array, start: number, end: number): number {
    let s = this.state;
    if (s >= S_DEAD) {
      if (s === S_DEAD) return start;
      // S_HEAD_DONE: onHead stopped a request that has no body; it is complete.
      if (!this.complete()) return start;
      s = S_START;
    }
    let i = start;
    // Index of the first byte past the header budget; it moves with i across calls.
    let lim = start + this.headLeft;
    // App mode, in a head: buf[this.mark, i) is still to be copied into headBytes.
    if (s >= S_METHOD && s <= S_LIMITED_LAST && this.capturing) this.mark = start;
    while (i < end) {
      if (s <= S_LIMITED_LAST) {
        if (s >= S_METHOD && i >= lim) return this.failLimit(i, s);
      } else if (s >= S_EXT_FIRST && s <= S_EXT_LAST && --this.chunkLineLeft < 0) {
        return this.fail(i, 413, "chunk extensions too large");
      }
      const c = buf[i];
      switch (s) {
        case S_START_LF: {
          if (c !== LF) return this.failStart(i, "CR not followed by LF");
          if (++this.emptyLines > MAX_EMPTY_LINES) {
            return this.failStart(i, "too many empty lines before request line");
          }
          s = S_START;
          i++;
          continue;
        }
        case S_START: {
          if (c === CR) {
            // Not idle from here: the last request's method must not describe this one.
            this.method = METHOD_OTHER;
            s = S_START_LF;
            i++;
            continue;
          }
          if ((CLASS[c] & TCHAR) === 0) {
            return this.failStart(i, c === LF ? "bare LF" : "invalid method");
          }
          this.clearRequest();
          lim = i + this.maxHeaderBytes;
          if (this.capture) {
            this.mark = i;
            this.capturing = true;
            this.headLen = 0;
            this.fieldCount = 0;
          }
          s = S_METHOD;
        }
        // falls through: the first method byte is consumed by the method loop.
        case S_METHOD: {
          const stop = lim < end ? lim : end;
          let len = this.mLen, lo = this.mLo, hi = this.mHi;
          for (; i < stop; i++) {
            const b = buf[i];
            if ((CLASS[b] & TCHAR) === 0) break;
            if (len < 4) lo = (lo << 8) | b;
            else if (len < 7) hi = (hi << 8) | b;
            len++;
          }
          this.mLen = len;
          this.mLo = lo;
          this.mHi = hi;
          if (i === stop) continue;
          if (buf[i] !== SP) return this.fail(i, 400, "invalid method");
          this.method = methodCode(len, lo, hi);
          s = S_TARGET;
          i++;
          continue;
        }
        case S_TARGET: {
          const stop = lim < end ? lim : end;
          const from = i;
          for (; i < stop; i++) {
            const b = buf[i];
            if (b <= SP || b >= DEL) break;
          }
          let n = this.targetLength;
          let t = this.target;
          if (n + (i - from) > t.length) t = this.growTarget(n + (i - from));
          for (let k = from; k < i; k++) t[n++] = buf[k];
          this.targetLength = n;
          if (i === stop) continue;
          const b = buf[i];
          if (b !== SP || n === 0) {
            return this.fail(i, 400, b === CR ? "missing HTTP version" : "invalid request target");
          }
          i++;
          // Shortcut for the common case of the whole "HTTP/1.x" CRLF being at hand (saves ~25%
          // on the wrk request); it takes the same decisions as the byte states below, which
          // handle everything else.
          if (stop - i >= 10) {
            const minor = buf[i + 7] - ZERO;
            if (
              buf[i] === 0x48 && buf[i + 1] === 0x54 && buf[i + 2] === 0x54 &&
              buf[i + 3] === 0x50 && buf[i + 4] === 0x2f && buf[i + 5] === 0x31 &&
              buf[i + 6] === DOT && (minor === 1 || minor === 0) && buf[i + 8] === CR &&
              buf[i + 9] === LF
            ) {
              this.versionMinor = minor;
              s = S_FIELD_START;
              i += 10;
              continue;
            }
          }
          s = S_VERSION;
          this.vIdx = 0;
          continue;
        }
        case S_VERSION: {
          if (c !== HTTP_SLASH[this.vIdx]) return this.fail(i, 400, "invalid HTTP version");
          if (++this.vIdx === HTTP_SLASH.length) s = S_VER_MAJOR;
          i++;
          continue;
        }
        case S_VER_MAJOR: {
          const d = c - ZERO;
          if (d < 0 || d > 9) return this.fail(i, 400, "invalid HTTP version");
          // Whatever follows, this request cannot succeed: say so now (RFC 9110 §15.6.6).
          if (d !== 1) return this.fail(i, 505, "HTTP version not supported");
          s = S_VER_DOT;
          i++;
          continue;
        }
        case S_VER_DOT: {
          if (c !== DOT) return this.fail(i, 400, "invalid HTTP version");
          s = S_VER_MINOR;
          i++;
          continue;
        }
        case S_VER_MINOR: {
          const d = c - ZERO;
          if (d < 0 || d > 9) return this.fail(i, 400, "invalid HTTP version");
          // RFC 9110 §2.5: a higher minor version is processed as the highest one implemented.
          this.versionMinor = d === 0 ? 0 : 1;
          s = S_REQ_CR;
          i++;
          continue;
        }
        case S_REQ_CR: {
          if (c !== CR) {
            return this.fail(i, 400, c === LF ? "bare LF" : "invalid HTTP version");
          }
          s = S_REQ_LF;
          i++;
          continue;
        }
        case S_REQ_LF:
        case S_FIELD_LF: {
          if (c !== LF) return this.fail(i, 400, "CR not followed by LF");
          s = S_FIELD_START;
          i++;
          continue;
        }
        case S_FIELD_START: {
          if (c === CR) {
            s = S_HEAD_LF;
            i++;
            continue;
          }
          if ((CLASS[c] & TCHAR) === 0) {
            return this.fail(
              i,
              400,
              c === SP || c === HTAB
                ? "obsolete line folding"
                : c === LF
                ? "bare LF"
                : "invalid header name",
            );
          }
          if (this.inTrailer) {
            // Trailer fields never carry framing or routing, so their names are not matched.
            s = S_TRAILER_NAME;
          } else {
            const lc = c | 0x20;
            if (lc === LOWER_C) {
              this.namePos = 1;
              this.nameEnd = N_CONTENT_LENGTH;
            } else if (lc === LOWER_T) {
              this.namePos = N_CONTENT_LENGTH + 1;
              this.nameEnd = N_TRANSFER_ENCODING;
            } else if (lc === LOWER_H) {
              this.namePos = N_CONNECTION + 1;
              this.nameEnd = N_HOST;
            } else if (lc === LOWER_E) {
              this.namePos = N_HOST + 1;
              this.nameEnd = N_EXPECT;
            } else {
              this.namePos = 0;
              this.nameEnd = -1;
            }
            s = S_NAME;
          }
          i++;
          continue;
        }
        case S_NAME: {
          const stop = lim < end ? lim : end;
          let pos = this.namePos, nend = this.nameEnd;
          for (; i < stop; i++) {
            const b = buf[i];
            if ((CLASS[b] & TCHAR) === 0) break;
            // | 0x20 folds A-Z onto a-z and never turns another tchar into a letter or "-",
            // so this is an exact case-insensitive compare against the lower-case table.
            const lc = b | 0x20;
            if (pos < nend && lc === NAMES[pos]) pos++;
            else if (nend === N_CONTENT_LENGTH && pos === N_SPLIT && lc === LOWER_N) {
              pos = N_TRANSFER_ENCODING + N_SPLIT + 1;
              nend = N_CONNECTION;
            } else nend = -1;
          }
          this.namePos = pos;
          this.nameEnd = nend;
          if (i === stop) continue;
          const b = buf[i];
          if (b !== COLON) {
            return this.fail(
              i,
              400,
              b === SP || b === HTAB ? "whitespace before colon" : "invalid header name",
            );
          }
          i++;
          s = S_VALUE;
          if (pos !== nend) continue;
          if (nend === N_HOST) {
            if (++this.hostCount > 1) return this.fail(i - 1, 400, "more than one Host header");
            s = S_VALUE_HOST;
          } else if (nend === N_CONTENT_LENGTH) {
            this.clPhase = 0;
            s = S_VALUE_CL;
          } else {
            if (nend === N_TRANSFER_ENCODING) {
              this.teSeen = true;
              this.listKind = LIST_TE;
            } else this.listKind = nend === N_CONNECTION ? LIST_CONNECTION : LIST_EXPECT;
            this.listPhase = 0;
            s = S_VALUE_LIST;
          }
          continue;
        }
        case S_TRAILER_NAME: {
          const stop = lim < end ? lim : end;
          while (i < stop && (CLASS[buf[i]] & TCHAR) !== 0) i++;
          if (i === stop) continue;
          const b = buf[i];
          if (b !== COLON) {
            return this.fail(
              i,
              400,
              b === SP || b === HTAB ? "whitespace before colon" : "invalid trailer name",
            );
          }
          s = S_VALUE;
          i++;
          continue;
        }
        case S_VALUE: {
          // No trimming needed here: OWS is valid value content (app mode trims when
          // it records the field).
          const stop = lim < end ? lim : end;
          while (i < stop && (CLASS[buf[i]] & VALUE) !== 0) i++;
          if (i === stop) continue;
          if (buf[i] !== CR) return this.fail(i, 400, "invalid header value");
          if (this.capturing) this.endField(buf, i);
          // Shortcut: when the LF is at hand, take it here rather than in another round.
          if (++i < stop && buf[i] === LF) {
            i++;
            s = S_FIELD_START;
          } else s = S_FIELD_LF;
          continue;
        }
        case S_VALUE_HOST: {
          // RFC 9112 §3.2: OWS [ reg-name / IPv4address / "[" IP-literal "]" ] [ ":" port ] OWS,
          // checked as it comes, so an invalid value fails at the byte that breaks it. Inline,
          // at the start of a value: one SP, a name, a colon, a port, the CR; anything else
          // (more whitespace, an IP-literal, the end of this read) goes on in S_HOST_REST.
          const stop = lim < end ? lim : end;
          let ph = H_LEAD;
          if (c === SP) i++;
          if (i < stop && (CLASS[buf[i]] & REGNAME) !== 0) {
            ph = H_NAME;
            while (++i < stop && (CLASS[buf[i]] & REGNAME) !== 0);
            if (i < stop && buf[i] === COLON) {
              ph = H_PORT;
              while (++i < stop && (CLASS[buf[i]] & DIGIT) !== 0);
            }
          }
          if (i === stop || buf[i] !== CR) {
            this.hostPhase = ph;
            s = S_HOST_REST;
            continue;
          }
          if (this.capturing) this.endField(buf, i);
          if (++i < stop && buf[i] === LF) {
            i++;
            s = S_FIELD_START;
          } else s = S_FIELD_LF;
          continue;
        }
        case S_HOST_REST: {
          const stop = lim < end ? lim : end;
          i = this.hostSlow(buf, i, stop, this.hostPhase);
          if (i === stop) continue; // phase saved
          if (i < 0) return this.fail(-i - 1, 400, "invalid Host header");
          if (this.capturing) this.endField(buf, i);
          s = S_FIELD_LF;
          i++;
          continue;
        }
        case S_VALUE_CL: {
          const d = c - ZERO;
          if (d >= 0 && d <= 9) {
            if (this.clPhase === 2) return this.fail(i, 400, "invalid Content-Length");
            if (this.clPhase === 0) {
              this.clPhase = 1;
              this.clValue = 0;
            }
            // Fails at the first digit that makes the value too large, so the value is
            // always exact (maxBody <= 2^48) and the rest of the line is not waited for.
            const v = this.clValue * 10 + d;
            if (v > this.maxBody) return this.fail(i, 413, "body too large");
            this.clValue = v;
          } else if (c === SP || c === HTAB) {
            if (this.clPhase === 1) this.clPhase = 2;
          } else if (c === COMMA || c === CR) {
            // RFC 9110 §8.6: a list of identical values may be taken as that value.
            if (this.clPhase === 0) return this.fail(i, 400, "invalid Content-Length");
            if (this.contentLength >= 0 && this.contentLength !== this.clValue) {
              return this.fail(i, 400, "conflicting Content-Length");
            }
            this.contentLength = this.clValue;
            this.clPhase = 0;
            if (c === CR) {
              if (this.capturing) this.endField(buf, i);
              s = S_FIELD_LF;
            }
          } else {
            return this.fail(i, 400, "invalid Content-Length");
          }
          i++;
          continue;
        }
        case S_VALUE_LIST: {
          if (c === COMMA || c === CR) {
            // Empty list elements are legal and ignored (RFC 9110 §5.6.1.2).
            if (this.listPhase !== 0) this.endListElement();
            this.listPhase = 0;
            if (c === CR) {
              if (this.capturing) this.endField(buf, i);
              s = S_FIELD_LF;
            }
          } else if (c === SP || c === HTAB) {
            if (this.listPhase === 1) this.listPhase = 2;
          } else if ((CLASS[c] & VALUE) === 0) {
            return this.fail(i, 400, "invalid header value");
          } else if (this.listPhase === 0) {
            this.listPhase = 1;
            const lc = c | 0x20;
            this.wordPos = 1;
            if (this.listKind === LIST_TE) {
              this.wordEnd = lc === LOWER_C ? W_CHUNKED : -1;
            } else if (this.listKind === LIST_EXPECT) {
              this.wordPos = W_KEEP_ALIVE + 1;
              this.wordEnd = c === ONE ? W_100_CONTINUE : -1;
            } else if (lc === LOWER_C) {
              this.wordPos = W_CHUNKED + 1;
              this.wordEnd = W_CLOSE;
            } else if (lc === LOWER_K) {
              this.wordPos = W_CLOSE + 1;
              this.wordEnd = W_KEEP_ALIVE;
            } else this.wordEnd = -1;
          } else if (this.listPhase === 2) {
            // "close x" is one element that is not "close".
            this.listPhase = 1;
            this.wordEnd = -1;
          } else if (this.wordPos < this.wordEnd && (c | 0x20) === WORDS[this.wordPos]) {
            this.wordPos++;
          } else this.wordEnd = -1;
          i++;
          continue;
        }
        case S_HEAD_LF: {
          if (c !== LF) return this.fail(i, 400, "CR not followed by LF");
          if (this.inTrailer) {
            i++;
            if (!this.complete()) return i;
            s = this.state;
            continue;
          }
          s = this.endOfHead();
          if (s === S_DEAD) return i;
          i++;
          if (this.headHooks && !this.headDone(buf, i, s)) return i;
          if (s === S_START) {
            if (!this.complete()) return i;
            s = this.state;
          }
          continue;
        }
        case S_BODY:
        case S_CHUNK_DATA: {
          const avail = end - i;
          const r = this.remaining;
          const n = avail < r ? avail : r;
          this.bodyBytes += n;
          this.remaining = r - n;
          if (this.hasOnBody) {
            // State first, so a sink that looks at the parser sees it where it is.
            this.state = s;
            this.sink.onBody!(buf, i, i + n);
          }
          i += n;
          if (r > n) continue;
          if (s === S_CHUNK_DATA) {
            s = S_CHUNK_DATA_CR;
            continue;
          }
          if (!this.complete()) return i;
          s = this.state;
          continue;
        }
        case S_CHUNK_SIZE_FIRST:
        case S_CHUNK_SIZE: {
          const d = HEX[c];
          if (d >= 0) {
            const size = this.remaining * 16 + d;
            // Checked per digit, so the size never grows past maxBody and cannot overflow.
            if (this.bodyBytes + size > this.maxBody) return this.fail(i, 413, "body too large");
            this.remaining = size;
            if (s === S_CHUNK_SIZE_FIRST) {
              this.sizeDigits = 1;
              s = S_CHUNK_SIZE;
            } else if (++this.sizeDigits > FREE_SIZE_DIGITS && --this.chunkLineLeft < 0) {
              return this.fail(i, 413, "chunk size line too long");
            }
          } else if (s === S_CHUNK_SIZE_FIRST) {
            return this.fail(i, 400, "invalid chunk size");
          } else if (c === CR) s = S_CHUNK_SIZE_LF;
          else if (c === SEMI) s = S_EXT_NAME_START;
          else if (c === SP || c === HTAB) s = S_EXT_BWS;
          else return this.fail(i, 400, "invalid chunk size");
          i++;
          continue;
        }
        case S_EXT_BWS: {
          if (c === SEMI) s = S_EXT_NAME_START;
          else if (c !== SP && c !== HTAB) return this.fail(i, 400, "invalid chunk extension");
          i++;
          continue;
        }
        case S_EXT_NAME_START:
        case S_EXT_VALUE_START: {
          if (c === SP || c === HTAB) {
            i++;
            continue;
          }
          if (s === S_EXT_VALUE_START && c === DQUOTE) s = S_EXT_QUOTED;
          else if ((CLASS[c] & TCHAR) === 0) return this.fail(i, 400, "invalid chunk extension");
          else s = s === S_EXT_NAME_START ? S_EXT_NAME : S_EXT_TOKEN;
          i++;
          continue;
        }
        case S_EXT_NAME:
        case S_EXT_TOKEN:
        case S_EXT_AFTER: {
          if (s !== S_EXT_AFTER && (CLASS[c] & TCHAR) !== 0) {
            i++;
            continue;
          }
          if (c === CR) s = S_CHUNK_SIZE_LF;
          else if (c === SEMI) s = S_EXT_NAME_START;
          else if (c === SP || c === HTAB) s = S_EXT_AFTER;
          else if (c === EQUALS && s === S_EXT_NAME) s = S_EXT_VALUE_START;
          else return this.fail(i, 400, "invalid chunk extension");
          i++;
          continue;
        }
        case S_EXT_QUOTED: {
          if (c === DQUOTE) s = S_EXT_AFTER;
          else if (c === BACKSLASH) s = S_EXT_ESCAPE;
          else if ((CLASS[c] & QDTEXT) === 0) return this.fail(i, 400, "invalid chunk extension");
          i++;
          continue;
        }
        case S_EXT_ESCAPE: {
          if ((CLASS[c] & VALUE) === 0) return this.fail(i, 400, "invalid chunk extension");
          s = S_EXT_QUOTED;
          i++;
          continue;
        }
        case S_CHUNK_SIZE_LF: {
          if (c !== LF) return this.fail(i, 400, "CR not followed by LF");
          i++;
          if (this.remaining === 0) {
            this.inTrailer = true;
            lim = i + this.maxHeaderBytes;
            s = S_FIELD_START;
          } else s = S_CHUNK_DATA;
          continue;
        }
        case S_CHUNK_DATA_CR: {
          if (c !== CR) return this.fail(i, 400, "missing CRLF after chunk data");
          s = S_CHUNK_DATA_LF;
          i++;
          continue;
        }
        case S_CHUNK_DATA_LF: {
          if (c !== LF) return this.fail(i, 400, "CR not followed by LF");
          s = S_CHUNK_SIZE_FIRST;
          i++;
          continue;
        }
        default:
          return this.fail(i, 400, "parser in an unknown state");
      }
    }
    if (s >= S_METHOD && s <= S_LIMITED_LAST && this.capturing) this.copyHead(buf, this.mark, i);
    this.state = s;
    this.headLeft = lim - i;
    return i;
  }

  /** Resets per-request fields; called when the first byte of a request line arrives. */
  private clearRequest(): void {
    this.method = METHOD_OTHER;
    this.targetLength = 0;
    this.versionMinor = 1;
    this.keepAlive = false;
    this.contentLength = -1;
    this.chunked = false;
    this.bodyBytes = 0;
    this.emptyLines = 0;
    this.mLen = 0;
    this.mLo = 0;
    this.mHi = 0;
    this.inTrailer = false;
    this.hostCount = 0;
    this.expectContinue = false;
    this.teSeen = false;
    this.teChunked = 0;
    this.teOther = 0;
    this.listFlags = 0;
    this.remaining = 0;
  }

  /** One element of a Connection / Transfer-Encoding list ended: apply it. */
  private endListElement(): void {
    const matched = this.wordPos === this.wordEnd;
    if (this.listKind === LIST_TE) {
      if (matched) this.teChunked++;
      else this.teOther++;
    } else if (matched) {
      // Other expectations are ignored (a 417 is allowed, not required: RFC 9110 §10.1.1).
      this.listFlags |= this.wordEnd === W_CLOSE
        ? F_CLOSE
        : this.wordEnd === W_KEEP_ALIVE
        ? F_KEEP_ALIVE
        : F_EXPECT_CONTINUE;
    }
  }

  /** Applies the header section's semantics; returns the next state (S_START: no body). */
  private endOfHead(): number {
    if (this.teSeen) {
      // RFC 9112 §6.1: TE in 1.0 or alongside Content-Length is a smuggling vector.
      if (this.versionMinor === 0) return this.failState(400, "Transfer-Encoding in HTTP/1.0");
      if (this.contentLength >= 0) {
        return this.failState(400, "both Content-Length and Transfer-Encoding");
      }
      if (this.teOther !== 0) return this.failState(501, "unsupported transfer coding");
      if (this.teChunked !== 1) return this.failState(400, "invalid Transfer-Encoding");
      this.chunked = true;
    }
    if (this.versionMinor === 1 && this.hostCount === 0) {
      return this.failState(400, "missing Host header");
    }
    if (this.contentLength > this.maxBody) return this.failState(413, "body too large");
    const flags = this.listFlags;
    this.keepAlive = this.versionMinor === 1
      ? (flags & F_CLOSE) === 0
      : (flags & (F_CLOSE | F_KEEP_ALIVE)) === F_KEEP_ALIVE;
    if ((flags & F_EXPECT_CONTINUE) !== 0) this.expectContinue = this.versionMinor === 1;
    if (this.chunked) {
      this.chunkLineLeft = this.maxHeaderBytes;
      this.remaining = 0;
      return S_CHUNK_SIZE_FIRST;
    }
    if (this.contentLength > 0) {
      this.remaining = this.contentLength;
      return S_BODY;
    }
    return S_START;
  }

  /** Hands the finished request to the sink; false when it asked to stop. */
  private complete(): boolean {
    // Stored first so a sink that calls reset() or reads `idle` sees a consistent parser.
    this.state = S_START;
    return this.sink.onRequest(this);
  }

  /** Fails at the header budget: 414 inside the target (the request line cannot fit), else 431. */
  private failLimit(i: number, s: number): number {
    if (s === S_TARGET) return this.fail(i, 414, "request target too long");
    return this.fail(
      i,
      431,
      this.inTrailer ? "trailer section too large" : "header section too large",
    );
  }

  /** Fails before a request line began: no method is known, whatever the last request's was. */
  private failStart(i: number, reason: string): number {
    this.method = METHOD_OTHER;
    return this.fail(i, 400, reason);
  }

  /** Kills the parser and reports; returns i so that execute can return it directly. */
  private fail(i: number, status: number, reason: string): number {
    this.state = S_DEAD;
    this.sink.onError(status, reason);
    return i;
  }

  /** Fails the request with `status` and returns the state that means "failed". */
  private failState(status: number, reason: string): number {
    this.fail(0, status, reason);
    return S_DEAD;
  }
}
