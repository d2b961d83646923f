/**
 * The `Request` a fetch handler gets: a real `Request` to every test
 * (`instanceof Request`, every member, `fetch(req)`, `new Request(req)`), but
 * built lazily. A `new Request(url)` costs ~4.5 µs here and `new Headers` ~1
 * µs: more than the rest of a request's handling. So the URL string, the
 * `Headers`, the body stream and the `AbortSignal` are made on first access,
 * from bytes copied out of the parser once; a handler that reads only
 * `method` and `url` pays for those two strings.
 *
 * Members this class does not implement itself (`cache`, `mode`, `clone`,
 * Deno's internal slots that `fetch` and `new Request(req)` read, ...)
 * delegate to a real `Request` made once, on demand, from this one.
 *
 * @module
 */

import type { HttpParser } from "./http_parser.ts";

const EMPTY: Uint8Array<ArrayBuffer> = new Uint8Array(0);

/** Bytes as a ByteString (one UTF-16 unit per byte), as Deno.serve exposes header values. */
export function latin1(bytes: Uint8Array, start: number, end: number): string {
  if (end - start <= 64) {
    let s = "";
    for (let i = start; i < end; i++) s += String.fromCharCode(bytes[i]);
    return s;
  }
  return String.fromCharCode.apply(null, Array.from(bytes.subarray(start, end)));
}

/** A string of Latin-1 units (a ByteString) as bytes, one per unit: the inverse of `latin1`. */
export function latin1Bytes(s: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(s.length);
  for (let k = 0; k < s.length; k++) out[k] = s.charCodeAt(k);
  return out;
}

/**
 * Where the first of `count` captured fields (4 ints each from `base`: name
 * and value offsets in `head`) named `lower` (lowercase bytes) is in
 * `fields`, or -1.
 */
export function fieldIndex(
  head: Uint8Array,
  fields: Int32Array,
  base: number,
  count: number,
  lower: Uint8Array,
): number {
  for (let f = 0; f < count; f++) {
    const o = base + f * 4;
    const s = fields[o];
    if (fields[o + 1] - s !== lower.length) continue;
    let k = 0;
    while (k < lower.length && (head[s + k] | 0x20) === lower[k]) k++;
    if (k === lower.length) return o;
  }
  return -1;
}

/** The value of the captured field at `o` (where `fieldIndex` found it) in the request `p` holds. */
export function fieldValueAt(p: HttpParser, o: number): string {
  return latin1(p.headBytes, p.fields[o + 2], p.fields[o + 3]);
}

/**
 * The value of the first header field named `lower` (lowercase bytes) in the
 * request whose captured head `p` holds, or null.
 */
export function fieldValue(p: HttpParser, lower: Uint8Array): string | null {
  const o = fieldIndex(p.headBytes, p.fields, 0, p.fieldCount, lower);
  return o < 0 ? null : fieldValueAt(p, o);
}

/**
 * A request body arriving from the connection: chunks copied out of the
 * read buffer, kept until the handler reads them (as a stream, or whole by
 * `text()` and the like). `wantMore` tells the connection whether to keep
 * reading: false once 64 KiB wait unread.
 */
export class BodySource {
  #chunks: Uint8Array<ArrayBuffer>[] = [];
  #queued = 0;
  #done = false;
  #error: Error | null = null;
  #controller: ReadableStreamDefaultController<Uint8Array<ArrayBuffer>> | null = null;
  #stream: ReadableStream<Uint8Array<ArrayBuffer>> | null = null;
  #waiters: (() => void)[] = [];
  #discarding = false;
  #read = false;
  /** Called when the reader has taken bytes and the connection may read again. */
  onDrain: (() => void) | null = null;
  /** Called the first time the body is read (for `Expect: 100-continue`). */
  onFirstRead: (() => void) | null = null;

  /** Bytes received and not yet taken by the reader. */
  get queued(): number {
    return this.#queued;
  }

  /** Whether the whole body has arrived. */
  get complete(): boolean {
    return this.#done;
  }

  /** Whether the connection should go on reading body bytes. */
  get wantMore(): boolean {
    return this.#discarding || this.#queued < 64 << 10;
  }

  /** Whether anyone asked for the body (a stream, or the whole). */
  get read(): boolean {
    return this.#read;
  }

  /**
   * Nobody will read the rest (the answer is sent): drop what is kept and
   * what still arrives, so the next request on the connection can be parsed.
   */
  discard(): void {
    this.#discarding = true;
    this.#chunks = [];
    this.#queued = 0;
  }

  /** Body bytes `data[start, end)` arrived (copied: `data` is the shared read buffer). */
  push(data: Uint8Array, start: number, end: number): void {
    if (this.#done || this.#discarding) return;
    const chunk = data.slice(start, end);
    if (this.#controller !== null) {
      this.#controller.enqueue(chunk);
    } else {
      this.#chunks.push(chunk);
      this.#queued += chunk.length;
    }
    this.#wake();
  }

  /** The body is complete. */
  end(): void {
    if (this.#done) return;
    this.#done = true;
    this.#controller?.close();
    this.#wake();
  }

  /** The body will never be complete (the client went away): readers get `error`. */
  fail(error: Error): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    this.#controller?.error(error);
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    if (waiters.length === 0) return;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  #firstRead(): void {
    this.#read = true;
    const f = this.onFirstRead;
    if (f !== null) {
      this.onFirstRead = null;
      f();
    }
  }

  /** The body as a stream (made once). */
  stream(): ReadableStream<Uint8Array<ArrayBuffer>> {
    if (this.#stream !== null) return this.#stream;
    this.#stream = new ReadableStream<Uint8Array<ArrayBuffer>>({
      start: (controller) => {
        this.#controller = controller;
        for (const c of this.#chunks) controller.enqueue(c);
        this.#chunks = [];
        this.#queued = 0;
        if (this.#error !== null) controller.error(this.#error);
        else if (this.#done) controller.close();
      },
      pull: () => {
        this.#firstRead();
        this.onDrain?.();
      },
      cancel: () => {
        this.#done = true;
        this.onDrain?.();
      },
    }, { highWaterMark: 0 });
    return this.#stream;
  }

  /** The whole body, once it has arrived. */
  async bytes(): Promise<Uint8Array<ArrayBuffer>> {
    this.#firstRead();
    if (this.#stream !== null) {
      return new Uint8Array(await new Response(this.#stream).arrayBuffer());
    }
    while (!this.#done) {
      this.onDrain?.(); // buffering it whole: keep reading past the stream's mark
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    if (this.#error !== null) throw this.#error;
    const chunks = this.#chunks;
    this.#chunks = [];
    this.#queued = 0;
    if (chunks.length === 0) return EMPTY;
    if (chunks.length === 1) return chunks[0];
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

/**
 * One connection's last URL: a keep-alive client mostly asks with the same
 * Host for the same paths, so the string is made once (Hono reads `url` on
 * every request).
 */
export class UrlCache {
  /** The Host value's bytes. */
  readonly host: Uint8Array = new Uint8Array(256);
  /** Their length; -1 when empty. */
  hostLength = -1;
  /** The target string (the same string object while the bytes repeat). */
  target = "";
  /** The URL made from them. */
  url = "";
}

const HOST = latin1Bytes("host");

const decoder = new TextDecoder();

/**
 * Every member of `Request`: those the class below does not define are
 * delegated at run time (the loop after the class), so the type says so.
 */
export interface ServerRequest extends Request {}

/** A lazily built `Request`; see the module comment. */
export class ServerRequest {
  readonly #method: string;
  readonly #target: string;
  readonly #origin: string;
  readonly #head: Uint8Array;
  readonly #fields: Int32Array;
  readonly #fieldBase: number;
  readonly #fieldCount: number;
  readonly #body: BodySource | null;
  readonly #cache: UrlCache | null;
  #url: string | null = null;
  #headers: Headers | null = null;
  #controller: AbortController | null = null;
  #bodyUsed = false;
  #real: Request | null = null;

  /**
   * @param method the method, as sent
   * @param target the request target as sent (origin-form `/path?q`, or absolute-form)
   * @param origin `http://host:port` for an origin-form target when there is no Host field
   * @param head bytes holding the header section (a copy: an arena shared by requests)
   * @param fields 4 ints per field, from `fieldBase`: name start/end, value start/end in `head`
   * @param fieldBase where this request's fields start in `fields`
   * @param fieldCount how many fields
   * @param body the body, or null when the request has none (GET, HEAD)
   * @param cache the connection's last URL, to reuse while Host and target repeat
   */
  constructor(
    method: string,
    target: string,
    origin: string,
    head: Uint8Array,
    fields: Int32Array,
    fieldBase: number,
    fieldCount: number,
    body: BodySource | null,
    cache: UrlCache | null = null,
  ) {
    this.#method = method;
    this.#target = target;
    this.#origin = origin;
    this.#head = head;
    this.#fields = fields;
    this.#fieldBase = fieldBase;
    this.#fieldCount = fieldCount;
    this.#body = body;
    this.#cache = cache;
  }

  /** The request method. */
  get method(): string {
    return this.#method;
  }

  /** The absolute URL: `http://` + the Host field + the target (or the target, if absolute). */
  get url(): string {
    if (this.#url !== null) return this.#url;
    const t = this.#target;
    if (t.charCodeAt(0) !== 0x2f /* / */ && t !== "*") return this.#url = t; // absolute-form
    const o = fieldIndex(this.#head, this.#fields, this.#fieldBase, this.#fieldCount, HOST);
    const cache = this.#cache;
    if (o < 0) return this.#url = this.#origin + (t === "*" ? "/" : t);
    const head = this.#head;
    const from = this.#fields[o + 2];
    const to = this.#fields[o + 3];
    // The connection's last URL, when this one's Host bytes and target are the same.
    if (cache !== null && cache.target === t && cache.hostLength === to - from) {
      const bytes = cache.host;
      let k = 0;
      while (k < to - from && bytes[k] === head[from + k]) k++;
      if (k === to - from) return this.#url = cache.url;
    }
    const url = "http://" + latin1(head, from, to) + (t === "*" ? "/" : t);
    if (cache !== null && to - from <= cache.host.length) {
      for (let k = 0; k < to - from; k++) cache.host[k] = head[from + k];
      cache.hostLength = to - from;
      cache.target = t;
      cache.url = url;
    }
    return this.#url = url;
  }

  /** The header fields. */
  get headers(): Headers {
    if (this.#headers !== null) return this.#headers;
    const head = this.#head;
    const fields = this.#fields;
    const h = new Headers();
    for (let f = 0; f < this.#fieldCount; f++) {
      const o = this.#fieldBase + f * 4;
      h.append(latin1(head, fields[o], fields[o + 1]), latin1(head, fields[o + 2], fields[o + 3]));
    }
    return this.#headers = h;
  }

  /** Aborted when the client goes away before the response is complete. */
  get signal(): AbortSignal {
    return (this.#controller ??= new AbortController()).signal;
  }

  /** Aborts `signal` (the app layer's call: the connection closed first). */
  abort(reason: unknown): void {
    (this.#controller ??= new AbortController()).abort(reason);
  }

  /** The body as a stream, or null when there is none. */
  get body(): ReadableStream<Uint8Array<ArrayBuffer>> | null {
    const b = this.#body;
    if (b === null) return null;
    return b.stream();
  }

  /** Whether the body has been read. */
  get bodyUsed(): boolean {
    return this.#bodyUsed;
  }

  #take(): BodySource | null {
    if (this.#bodyUsed) throw new TypeError("Body already consumed");
    this.#bodyUsed = true;
    return this.#body;
  }

  /** The body as bytes. */
  async bytes(): Promise<Uint8Array<ArrayBuffer>> {
    const b = this.#take();
    return b === null ? EMPTY : await b.bytes();
  }

  /** The body as an ArrayBuffer. */
  async arrayBuffer(): Promise<ArrayBuffer> {
    const u = await this.bytes();
    return u.byteOffset === 0 && u.byteLength === u.buffer.byteLength ? u.buffer : u.slice().buffer;
  }

  /** The body as UTF-8 text. */
  async text(): Promise<string> {
    return decoder.decode(await this.bytes());
  }

  /** The body parsed as JSON. */
  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }

  /** The body as a Blob typed by Content-Type. */
  async blob(): Promise<Blob> {
    return new Blob([await this.bytes()], { type: this.headers.get("content-type") ?? "" });
  }

  /** The body parsed as form data (urlencoded or multipart), as Fetch does it. */
  async formData(): Promise<FormData> {
    const type = this.headers.get("content-type") ?? "";
    return await new Response(await this.bytes(), { headers: { "content-type": type } }).formData();
  }

  /**
   * A real `Request` equal to this one, made once: what members this class
   * does not implement (and Deno's internal slots) are read from it. Its
   * body is this request's stream, so using it uses the body.
   */
  real(): Request {
    if (this.#real !== null) return this.#real;
    const hasBody = this.#body !== null && !this.#bodyUsed;
    const body = hasBody ? this.body : null;
    if (hasBody) this.#bodyUsed = true;
    this.#real = new Request(this.url, {
      method: this.method,
      headers: this.headers,
      body,
      signal: this.signal,
      // deno-lint-ignore no-explicit-any
      ...(body !== null ? { duplex: "half" } as any : {}),
    });
    return this.#real;
  }

  /** A copy, as `Request.clone()` makes it. */
  clone(): Request {
    return this.real().clone();
  }
}

// The chain a real Request has, so `instanceof Request` holds; everything
// Request.prototype defines that this class does not is delegated.
Object.setPrototypeOf(ServerRequest.prototype, Request.prototype);
{
  const own = new Set(Object.getOwnPropertyNames(ServerRequest.prototype));
  for (const name of Object.getOwnPropertyNames(Request.prototype)) {
    if (own.has(name) || name === "constructor") continue;
    const d = Object.getOwnPropertyDescriptor(Request.prototype, name)!;
    if (d.get) {
      Object.defineProperty(ServerRequest.prototype, name, {
        get(this: ServerRequest) {
          return Reflect.get(Request.prototype, name, this.real());
        },
        configurable: true,
      });
    } else if (typeof d.value === "function") {
      Object.defineProperty(ServerRequest.prototype, name, {
        value(this: ServerRequest, ...args: unknown[]) {
          const real = this.real();
          return (real as unknown as Record<string, (...a: unknown[]) => unknown>)[name](...args);
        },
        configurable: true,
        writable: true,
      });
    }
  }
  // Deno's own code (fetch, new Request(req), the inspector) reads internal
  // slots by symbol: answer them from the real Request.
  const probe = new Request("http://x/");
  for (const sym of Object.getOwnPropertySymbols(probe)) {
    Object.defineProperty(ServerRequest.prototype, sym, {
      get(this: ServerRequest) {
        return (this.real() as unknown as Record<symbol, unknown>)[sym];
      },
      configurable: true,
    });
  }
  for (const sym of Object.getOwnPropertySymbols(Request.prototype)) {
    if (sym === Symbol.toStringTag) continue;
    const d = Object.getOwnPropertyDescriptor(Request.prototype, sym)!;
    if (typeof d.value === "function") {
      Object.defineProperty(ServerRequest.prototype, sym, {
        value(this: ServerRequest, ...args: unknown[]) {
          return (d.value as (...a: unknown[]) => unknown).apply(this.real(), args);
        },
        configurable: true,
      });
    }
  }
}
