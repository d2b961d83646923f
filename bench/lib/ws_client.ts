/**
 * What the bench's WebSocket clients share: the upgrade request, and
 * reading the 101 off a connection's first bytes.
 *
 * @module
 */

/** The upgrade request every bench client sends (a fixed key: the server does not care). */
export const WS_UPGRADE_REQUEST: Uint8Array = new TextEncoder().encode(
  "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
);

const latin1 = new TextDecoder("latin1");

/** Reads the server's answer to `WS_UPGRADE_REQUEST` off a connection's first bytes. */
export class UpgradeReader {
  /** Whether the 101 has been read (the bytes after it are frames). */
  upgraded = false;
  #head = "";

  /**
   * Takes the next bytes read before the upgrade: returns where the frames
   * start in `chunk` once the head is complete, -1 until then.
   *
   * @throws {Error} when the answer is not `101`
   */
  feed(chunk: Uint8Array): number {
    const before = this.#head.length;
    this.#head += latin1.decode(chunk);
    const at = this.#head.indexOf("\r\n\r\n");
    if (at < 0) return -1;
    if (!this.#head.startsWith("HTTP/1.1 101")) throw new Error(`no upgrade: ${this.#head}`);
    this.#head = "";
    this.upgraded = true;
    // latin1 is one char per byte: the head ends this far into the chunk.
    return at + 4 - before;
  }
}
