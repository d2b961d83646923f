/**
 * A strict little HTTP/1.1 response reader for tests: status, headers and a
 * Content-Length body, read off a raw TCP connection.
 *
 * @module
 */

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

function findHeadEnd(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

/** Encodes text as bytes. */
export const bytes = (s: string) => new TextEncoder().encode(s);
