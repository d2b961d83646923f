/**
 * Raw WebSocket bytes for tests: client frames (masked unless asked not to),
 * the upgrade request, and a reader of server frames over a `Deno.Conn`.
 *
 * @module
 */

import { readHead } from "./http.ts";
import { concat, dial } from "./net.ts";

const enc = new TextEncoder();

/** Options of a client frame. */
export interface FrameOptions {
  /** FIN bit (default true). */
  fin?: boolean;
  /** RSV1-3 bits as 0-7 (default 0). */
  rsv?: number;
  /** Mask the payload (default true; clients must). */
  mask?: boolean;
  /** The mask key (default 0x12345678... bytes). */
  key?: number[];
}

/** A client frame of `opcode` with `payload` (a string is UTF-8). */
export function frame(
  opcode: number,
  payload: string | Uint8Array = new Uint8Array(0),
  o: FrameOptions = {},
): Uint8Array {
  const data = typeof payload === "string" ? enc.encode(payload) : payload;
  const masked = o.mask ?? true;
  const key = o.key ?? [0x12, 0x34, 0x56, 0x78];
  const n = data.length;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const out = new Uint8Array(2 + ext + (masked ? 4 : 0) + n);
  out[0] = ((o.fin ?? true) ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | opcode;
  out[1] = (masked ? 0x80 : 0) | (n < 126 ? n : n < 65536 ? 126 : 127);
  let p = 2;
  if (ext === 2) {
    out[2] = n >>> 8;
    out[3] = n & 0xff;
    p = 4;
  } else if (ext === 8) {
    const view = new DataView(out.buffer);
    view.setUint32(2, Math.floor(n / 2 ** 32));
    view.setUint32(6, n >>> 0);
    p = 10;
  }
  if (masked) {
    out.set(key, p);
    p += 4;
    for (let i = 0; i < n; i++) out[p + i] = data[i] ^ key[i & 3];
  } else out.set(data, p);
  return out;
}

/** A close frame's payload: code and reason. */
export function closePayload(code: number, reason = ""): Uint8Array {
  const r = enc.encode(reason);
  const out = new Uint8Array(2 + r.length);
  out[0] = code >>> 8;
  out[1] = code & 0xff;
  out.set(r, 2);
  return out;
}

/** A valid upgrade request for `path`, with extra header lines. */
export function upgradeRequest(path = "/", extra: string[] = [], drop: string[] = []): string {
  const lines = [
    `GET ${path} HTTP/1.1`,
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
  ].filter((l) => !drop.some((d) => l.toLowerCase().startsWith(d.toLowerCase() + ":")));
  return [...lines, ...extra, "", ""].join("\r\n");
}

/**
 * Dials 127.0.0.1:`port`, sends `request` (by default a valid upgrade of
 * "/"), reads the response head: the connection, its reader (at the first
 * frame) and the head, whatever its status. The connection is closed if no
 * head comes.
 */
export async function dialUpgrade(
  port: number,
  request: string = upgradeRequest(),
): Promise<{ conn: Deno.TcpConn; r: WsReader; head: string }> {
  const conn = await dial(port);
  try {
    await conn.write(enc.encode(request));
    const r = new WsReader(conn);
    return { conn, r, head: await r.head() };
  } catch (e) {
    conn.close();
    throw e;
  }
}

/** A server frame as read. */
export interface ServerFrame {
  fin: boolean;
  rsv: number;
  opcode: number;
  masked: boolean;
  payload: Uint8Array;
}

/** Reads an HTTP head, then server frames, from a connection. */
export class WsReader {
  #conn: Deno.Conn;
  #buf: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  #eof = false;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async #more(): Promise<boolean> {
    if (this.#eof) return false;
    const chunk = new Uint8Array(256 << 10);
    let n: number | null;
    try {
      n = await this.#conn.read(chunk);
    } catch {
      n = null;
    }
    if (n === null) {
      this.#eof = true;
      return false;
    }
    this.#buf = concat(this.#buf, chunk.subarray(0, n));
    return true;
  }

  /** The HTTP response head (status line and fields) as text; call it first. */
  async head(): Promise<string> {
    const { head, rest } = await readHead(this.#conn, new Uint8Array(64 << 10));
    this.#buf = rest.slice();
    return head;
  }

  /** The next frame, or null at EOF. */
  async frame(): Promise<ServerFrame | null> {
    for (;;) {
      const b = this.#buf;
      if (b.length >= 2) {
        let len = b[1] & 0x7f;
        let p = 2;
        if (len === 126 && b.length >= 4) {
          len = (b[2] << 8) | b[3];
          p = 4;
        } else if (len === 127 && b.length >= 10) {
          const v = new DataView(b.buffer, b.byteOffset);
          len = v.getUint32(2) * 2 ** 32 + v.getUint32(6);
          p = 10;
        } else if (len >= 126) p = -1;
        const masked = (b[1] & 0x80) !== 0;
        if (p > 0 && b.length >= p + (masked ? 4 : 0) + len) {
          const start = p + (masked ? 4 : 0);
          const f = {
            fin: (b[0] & 0x80) !== 0,
            rsv: (b[0] >> 4) & 7,
            opcode: b[0] & 0xf,
            masked,
            payload: b.slice(start, start + len),
          };
          this.#buf = b.slice(start + len);
          return f;
        }
      }
      if (!(await this.#more())) return null;
    }
  }

  /** Whether the server closes the connection (EOF) with nothing more sent. */
  async eof(): Promise<boolean> {
    while (this.#buf.length === 0) {
      if (!(await this.#more())) return true;
    }
    return false;
  }
}

/** A close frame's code (1005 for none) and reason. */
export function closeOf(f: ServerFrame): { code: number; reason: string } {
  if (f.payload.length < 2) return { code: 1005, reason: "" };
  return {
    code: (f.payload[0] << 8) | f.payload[1],
    reason: new TextDecoder().decode(f.payload.subarray(2)),
  };
}
