/**
 * A tiny in-memory key-value server: a first line protocol on reactor.
 *
 * Usage (from any directory):
 *
 * ```sh
 * deno run -A examples/kv.ts [--port 7379] [--host 127.0.0.1]
 * ```
 *
 * Then, e.g. with `nc 127.0.0.1 7379`, one command per line (`\n` or `\r\n`):
 *
 * ```text
 * SET key value   ->  OK              (the value is everything after "SET key ")
 * GET key         ->  VALUE value     or NOT_FOUND
 * BIG n           ->  n bytes of "x", then "\n"
 * QUIT            ->  BYE, then the server closes the connection
 * anything else   ->  ERROR <reason>  (the connection stays open)
 * ```
 *
 * A line longer than 64 KiB gets `ERROR line too long` and the connection is
 * closed. Port 0 picks a free port; the line `kv listening on HOST:PORT` on
 * stdout says which. SIGINT or SIGTERM: finish what is in flight, then exit 0.
 *
 * What it shows: splitting a byte stream into lines (a line may arrive in
 * pieces, several lines may arrive in one read), one `Protocol` object per
 * connection holding that connection's state, and backpressure: after a big
 * reply, stop working through the input until the peer has read most of it.
 *
 * @module
 */

import { parseArgs } from "node:util";
// A relative import, so this file runs from anywhere (no import map needed).
import { type Connection, type Protocol, Server } from "../mod.ts";

/** Longest line accepted, without its `\n`. */
const MAX_LINE = 64 * 1024;
/** Largest `BIG n` served (the reply is built in memory). */
const MAX_BIG = 256 * 1024 * 1024;
const NEWLINE = 0x0a;
const CR = 0x0d;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The store, shared by every connection. */
const store = new Map<string, string>();

/** One per connection: what is left of its input, and whether it waits for the peer to read. */
class KvSession implements Protocol {
  /** Bytes received but not handled yet: an unfinished line, or lines held back (see `waiting`). */
  #input = new Uint8Array(0);
  /** The output reached the high-water mark: handle no more lines until `lowWater`. */
  #waiting = false;
  /** QUIT or a fatal error: ignore whatever else arrives. */
  #done = false;

  /** Bytes arrived. `data` is the server's shared buffer: copy what we keep. */
  data(conn: Connection, data: Uint8Array, start: number, end: number): void {
    let buf = data.subarray(start, end);
    if (this.#input.length > 0) {
      // Glue the new bytes to the unfinished line kept from the last read.
      const joined = new Uint8Array(this.#input.length + buf.length);
      joined.set(this.#input);
      joined.set(buf, this.#input.length);
      buf = joined;
    }
    this.#handle(conn, buf);
  }

  /** Handles every complete line of `buf`, then keeps (copies) the rest. */
  #handle(conn: Connection, buf: Uint8Array): void {
    let pos = 0;
    while (!this.#waiting && !this.#done && !conn.closed) {
      const nl = buf.indexOf(NEWLINE, pos);
      if (nl < 0) break; // no complete line left
      let lineEnd = nl;
      if (lineEnd > pos && buf[lineEnd - 1] === CR) lineEnd--; // "\r\n" too
      if (lineEnd - pos > MAX_LINE) return this.#fail(conn, "line too long");
      this.#command(conn, decoder.decode(buf.subarray(pos, lineEnd)));
      pos = nl + 1;
    }
    // `slice` copies: `buf` may be the shared read buffer, reused by the next read.
    this.#input = buf.slice(pos);
    // No newline within the limit (the +1 leaves room for a "\r"): it will never fit.
    if (!this.#waiting && this.#input.length > MAX_LINE + 1) this.#fail(conn, "line too long");
  }

  /** One command line, without its line ending. */
  #command(conn: Connection, line: string): void {
    const space = line.indexOf(" ");
    const name = space < 0 ? line : line.slice(0, space);
    const args = space < 0 ? "" : line.slice(space + 1);
    switch (name) {
      case "": // an empty line: nothing to do
        return;
      case "SET": {
        const sep = args.indexOf(" ");
        if (sep <= 0) return this.#reply(conn, "ERROR usage: SET key value\n");
        // The value is everything after "SET key ", spaces included.
        store.set(args.slice(0, sep), args.slice(sep + 1));
        return this.#reply(conn, "OK\n");
      }
      case "GET": {
        if (args === "" || args.includes(" ")) return this.#reply(conn, "ERROR usage: GET key\n");
        const value = store.get(args);
        return this.#reply(conn, value === undefined ? "NOT_FOUND\n" : `VALUE ${value}\n`);
      }
      case "BIG": {
        const n = /^\d{1,9}$/.test(args) ? Number(args) : -1;
        if (n < 0 || n > MAX_BIG) {
          return this.#reply(conn, `ERROR usage: BIG n (0 <= n <= ${MAX_BIG})\n`);
        }
        const reply = new Uint8Array(n + 1).fill(0x78); // "x" * n ...
        reply[n] = NEWLINE; // ... then "\n"
        // One write, whatever the size: the connection sends what the socket
        // takes now and queues the rest. It returns false (and `highWater`
        // runs) when much is left waiting.
        conn.write(reply);
        return;
      }
      case "QUIT":
        this.#reply(conn, "BYE\n");
        this.#done = true;
        conn.closeAfterFlush(); // send BYE (and anything before it), then close
        return;
      default:
        return this.#reply(conn, `ERROR unknown command ${JSON.stringify(name)}\n`);
    }
  }

  #reply(conn: Connection, text: string): void {
    conn.write(encoder.encode(text));
  }

  /** A fatal error: say why, then close once it is sent. */
  #fail(conn: Connection, reason: string): void {
    this.#reply(conn, `ERROR ${reason}\n`);
    this.#done = true;
    this.#input = new Uint8Array(0);
    conn.closeAfterFlush();
  }

  /**
   * Much output waits for a peer that reads slower than we write (after a
   * BIG). Stop: read nothing more, and leave the lines already read for later.
   * Writing on regardless would buffer without bound (the library cuts such a
   * connection at 16 MiB waiting).
   */
  highWater(conn: Connection): void {
    this.#waiting = true;
    conn.pauseReading();
  }

  /** The peer read most of it: handle the lines held back, then read again. */
  lowWater(conn: Connection): void {
    this.#waiting = false;
    this.#handle(conn, this.#input);
    if (!this.#waiting && !this.#done) conn.resumeReading();
  }

  // No `end` (peer FIN) method: the default flushes what is pending, then
  // closes. No `closed`: the session holds nothing that needs freeing.
}

// --- Command line ---------------------------------------------------------

function usageError(message: string): never {
  console.error(`kv: ${message} (usage: kv.ts [--port N] [--host ADDRESS])`);
  Deno.exit(2);
}

let flags: { port: string; host: string };
try {
  flags = parseArgs({
    args: Deno.args,
    strict: true, // unknown flags and stray arguments are errors
    options: {
      port: { type: "string", default: "7379" },
      host: { type: "string", default: "127.0.0.1" },
    },
  }).values;
} catch (e) {
  usageError((e as Error).message);
}
const port = /^\d{1,5}$/.test(flags.port) ? Number(flags.port) : -1;
if (port < 0 || port > 65535) usageError(`--port must be 0 to 65535, got "${flags.port}"`);

// --- Serve ----------------------------------------------------------------

const server = await Server.start({
  host: flags.host,
  port,
  protocol: () => new KvSession(), // a fresh session for every connection
});
console.log(`kv listening on ${server.address}`); // server.port is the real one when 0 was asked

let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    if (stopping) return;
    stopping = true;
    await server.shutdown(5000); // stop accepting, let replies flush, 5 s at most
    Deno.exit(0);
  });
}
