/**
 * The access log: one line per answered request, in nginx's `common` or
 * `combined` format or as JSON Lines, written to stdout. Off by default
 * (`--access-log FORMAT`). Lines gather in memory and leave in one write per
 * loop iteration (the reactor's beforeWait), or at 64 KiB, so logging costs
 * no syscall per request.
 *
 * @module
 */

import type { Reactor } from "../../../reactor/reactor.ts";

/** The formats `--access-log` takes. */
export const ACCESS_LOG_FORMATS = ["common", "combined", "json"] as const;
/** One of `ACCESS_LOG_FORMATS`. */
export type AccessLogFormat = typeof ACCESS_LOG_FORMATS[number];

/** What is logged of one request. */
export interface AccessRecord {
  /** The client's address. */
  remote: string;
  /** The method, as sent. */
  method: string;
  /** The request target, as sent. */
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  versionMinor: number;
  /** The response status. */
  status: number;
  /** Body bytes of the response, or -1 when not known (a stream). */
  bytes: number;
  /** The Referer field, or null. */
  referer: string | null;
  /** The User-Agent field, or null. */
  userAgent: string | null;
  /** Milliseconds from the head's arrival to the response handed to the connection. */
  durationMs: number;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const encoder = new TextEncoder();

/** nginx's `$time_local` (in UTC): `30/Nov/2026:06:12:01 +0000`. */
function timeLocal(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

/** A quoted field as nginx writes it: `"` and `\\` escaped, control bytes as \\xHH. */
function quoted(s: string | null): string {
  if (s === null) return '"-"';
  return '"' +
    s.replace(
      // deno-lint-ignore no-control-regex -- control bytes are exactly what must be escaped
      /["\\\x00-\x1f\x7f]/g,
      (c) =>
        c === '"' || c === "\\" ? "\\" + c : "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0"),
    ) +
    '"';
}

/** Formats and batches access log lines for one reactor. */
export class AccessLog {
  readonly format: AccessLogFormat;
  #lines: string[] = [];
  #size = 0;
  #second = -1;
  #time = "";
  readonly #write: (bytes: Uint8Array) => void;

  /**
   * @param reactor whose beforeWait hook flushes the lines
   * @param format the line format
   * @param write where the bytes go (default: stdout, synchronously)
   */
  constructor(
    reactor: Reactor,
    format: AccessLogFormat,
    write: (bytes: Uint8Array) => void = (b) => {
      let off = 0;
      while (off < b.length) off += Deno.stdout.writeSync(b.subarray(off));
    },
  ) {
    this.format = format;
    this.#write = write;
    reactor.beforeWait(() => this.flush());
  }

  /** Adds the line for `r`. */
  add(r: AccessRecord): void {
    const now = Date.now();
    const second = Math.floor(now / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#time = this.format === "json" ? "" : timeLocal(new Date(now));
    }
    let line: string;
    if (this.format === "json") {
      line = JSON.stringify({
        time: new Date(now).toISOString(),
        remote: r.remote,
        method: r.method,
        target: r.target,
        protocol: `HTTP/1.${r.versionMinor}`,
        status: r.status,
        bytes: r.bytes,
        referer: r.referer,
        userAgent: r.userAgent,
        durationMs: Math.round(r.durationMs * 1000) / 1000,
      });
    } else {
      line =
        `${r.remote} - - [${this.#time}] ${
          quoted(`${r.method} ${r.target} HTTP/1.${r.versionMinor}`)
        } ` +
        `${r.status} ${r.bytes < 0 ? "-" : r.bytes}`;
      if (this.format === "combined") line += ` ${quoted(r.referer)} ${quoted(r.userAgent)}`;
    }
    this.#lines.push(line);
    this.#size += line.length + 1;
    if (this.#size >= 64 << 10) this.flush();
  }

  /** Writes the lines gathered so far. */
  flush(): void {
    if (this.#lines.length === 0) return;
    const text = this.#lines.join("\n") + "\n";
    this.#lines = [];
    this.#size = 0;
    this.#write(encoder.encode(text));
  }
}
