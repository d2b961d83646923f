/**
 * Little HTTP/1.1 response readers for tests, off a raw TCP connection:
 * `ResponseReader` (strict: status, headers and a Content-Length text body)
 * and `Replies` (binary bodies: Content-Length, chunked, or to close).
 *
 * @module
 */

import assert from "node:assert/strict";
import { concat } from "./net.ts";

const DEC = new TextDecoder();

/** One parsed response. */
export interface Response {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Reads responses off a connection, keeping bytes that belong to the next one. */
export class ResponseReader {
  #buf = new Uint8Array(0);
  #eof = false;
  readonly #conn: Deno.Conn;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    const chunk = new Uint8Array(65536);
    const n = await this.#conn.read(chunk).catch(() => null);
    if (n === null) {
      this.#eof = true;
      return false;
    }
    const next = new Uint8Array(this.#buf.length + n);
    next.set(this.#buf);
    next.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = next;
    return true;
  }

  /** The next response; `head` says the request was HEAD (no body follows). */
  async next(head = false): Promise<Response> {
    let end: number;
    for (;;) {
      end = findHeadEnd(this.#buf);
      if (end >= 0) break;
      if (!(await this.#fill())) throw new Error("connection closed before a response head");
    }
    const text = new TextDecoder().decode(this.#buf.subarray(0, end));
    const [statusLine, ...lines] = text.split("\r\n");
    const m = statusLine.match(/^HTTP\/1\.1 (\d{3}) [^\r\n]+$/);
    if (!m) throw new Error(`bad status line: ${statusLine}`);
    const headers = new Map<string, string>();
    for (const line of lines) {
      const i = line.indexOf(":");
      headers.set(line.slice(0, i).toLowerCase(), line.slice(i + 1).trim());
    }
    const length = head ? 0 : Number(headers.get("content-length") ?? "0");
    const start = end + 4;
    while (this.#buf.length < start + length) {
      if (!(await this.#fill())) throw new Error("connection closed inside a body");
    }
    const body = new TextDecoder().decode(this.#buf.subarray(start, start + length));
    this.#buf = this.#buf.slice(start + length);
    return { status: Number(m[1]), headers, body };
  }

  /** True when the server closes the connection with nothing more to read. */
  async closed(): Promise<boolean> {
    while (await this.#fill()) { /* drain */ }
    return this.#buf.length === 0;
  }
}

/** One response read off the wire. */
export interface Reply {
  status: number;
  /** The head as sent, for messages. */
  head: string;
  /** Field values by lower-case name (repeated fields joined with ", "). */
  headers: Map<string, string>;
  /** How many times each lower-case field name appeared. */
  counts: Map<string, number>;
  body: Uint8Array;
}

/** Reads responses off a connection with binary bodies (Content-Length, chunked, or to close). */
export class Replies {
  #buf = new Uint8Array(1 << 16);
  #start = 0;
  #end = 0;
  #eof = false;
  readonly #conn: Deno.Conn;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  get #length(): number {
    return this.#end - this.#start;
  }

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    if (this.#buf.length - this.#end < 1 << 16) {
      const live = this.#length;
      if (live + (1 << 16) > this.#buf.length / 2) {
        const next = new Uint8Array((live + (1 << 16)) * 2);
        next.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = next;
      } else {
        this.#buf.copyWithin(0, this.#start, this.#end);
      }
      this.#start = 0;
      this.#end = live;
    }
    const n = await this.#conn.read(this.#buf.subarray(this.#end)).catch(() => null);
    if (n === null) {
      this.#eof = true;
      return false;
    }
    this.#end += n;
    return true;
  }

  #take(n: number): Uint8Array {
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  async #need(n: number, what: string): Promise<void> {
    while (this.#length < n) {
      if (!(await this.#fill())) throw new Error(`closed ${what} (${this.#length} of ${n} bytes)`);
    }
  }

  async #line(): Promise<string> {
    for (;;) {
      const view = this.#buf.subarray(this.#start, this.#end);
      const i = view.indexOf(10);
      if (i >= 0) return DEC.decode(this.#take(i + 1)).replace(/\r?\n$/, "");
      if (!(await this.#fill())) throw new Error("closed inside a chunk size line");
    }
  }

  /** The next response; `head` says the request was HEAD (no body follows). */
  async next(head = false): Promise<Reply> {
    let at: number;
    for (;;) {
      at = findHeadEnd(this.#buf.subarray(this.#start, this.#end));
      if (at >= 0) break;
      if (!(await this.#fill())) {
        throw new Error(`closed before a response head (${this.#length} bytes pending)`);
      }
    }
    const text = DEC.decode(this.#take(at + 4)).slice(0, -4);
    const [statusLine, ...lines] = text.split("\r\n");
    const m = statusLine.match(/^HTTP\/1\.[01] (\d{3}) [^\r\n]*$/);
    if (!m) throw new Error(`bad status line: ${JSON.stringify(statusLine)}`);
    const status = Number(m[1]);
    const headers = new Map<string, string>();
    const counts = new Map<string, number>();
    for (const line of lines) {
      const i = line.indexOf(":");
      assert.ok(i > 0, `bad header line ${JSON.stringify(line)} in\n${text}`);
      const name = line.slice(0, i).toLowerCase();
      const value = line.slice(i + 1).trim();
      headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    let body: Uint8Array = new Uint8Array(0);
    if (head || status === 304 || status === 204 || status < 200) {
      // no body
    } else if (headers.has("content-length")) {
      const n = Number(headers.get("content-length"));
      assert.ok(Number.isSafeInteger(n) && n >= 0, `bad Content-Length in\n${text}`);
      await this.#need(n, `inside a ${n}-byte body after\n${text}`);
      body = this.#take(n);
    } else if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
      const parts: Uint8Array[] = [];
      for (;;) {
        const size = parseInt(await this.#line(), 16);
        if (size === 0) {
          while ((await this.#line()) !== "") { /* trailers */ }
          break;
        }
        await this.#need(size + 2, "inside a chunk");
        parts.push(this.#take(size));
        this.#take(2);
      }
      body = concat(...parts);
    } else {
      while (await this.#fill()) { /* to close */ }
      body = this.#take(this.#length);
    }
    return { status, head: text, headers, counts, body };
  }

  /** Resolves true when the peer closes with no further bytes (false: bytes came). */
  async closed(): Promise<boolean> {
    while (await this.#fill()) { /* drain */ }
    return this.#length === 0;
  }
}

/**
 * Reads off `conn` into `buf` until a response head has come; returns the
 * head (up to its blank line) and the bytes read past it, for callers that
 * read the body themselves.
 */
export async function readHead(
  conn: Deno.Conn,
  buf: Uint8Array,
): Promise<{ head: string; rest: Uint8Array }> {
  let pending: Uint8Array = new Uint8Array(0);
  while (findHeadEnd(pending) < 0) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("closed before the head");
    pending = concat(pending, buf.subarray(0, n));
  }
  const end = findHeadEnd(pending);
  return { head: DEC.decode(pending.subarray(0, end)), rest: pending.subarray(end + 4) };
}

function findHeadEnd(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

/** Encodes text as bytes. */
export const bytes = (s: string) => new TextEncoder().encode(s);
