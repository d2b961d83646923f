/**
 * Serving a directory over HTTP (RFC 9110): the request's target becomes a
 * path under the root (target.ts), the file comes from the open-file cache
 * (file_cache.ts), and the answer is decided here (conditional requests,
 * ranges, precompressed sidecars, directories) and written straight into
 * the connection: the head, then the body from memory (small files) or by
 * sendfile(2) (the rest). No `Request` or `Response` is built.
 *
 * - GET and HEAD only; other methods get 405 (or go to the fallback app).
 * - `If-None-Match` (weak comparison), else `If-Modified-Since`: 304.
 * - `Range`: one range (`a-b`, `a-`, `-n`) gives 206; several are answered
 *   with the whole file (RFC 9110 14.2 lets a server ignore Range); one that
 *   cannot be met gives 416 with `Content-Range: bytes *\/size`; `If-Range`
 *   with another validator than the current one gives the whole file.
 * - `Accept-Encoding`: a `.br` (preferred) or `.gz` sidecar when the client
 *   takes it (q > 0), with `Content-Encoding` and `Vary: Accept-Encoding`.
 *   A range request is answered from the identity file.
 * - Directories: `/dir` redirects to `/dir/`; `/dir/` serves `index.html`,
 *   else a listing when asked for (`listDirectories`), else 403.
 * - Dotfiles (`.env`, `.git/`) are not served unless `dotfiles`
 *   (`/.well-known/` always is); symlinks out of the root are refused
 *   unless `followSymlinks`.
 * - With a fallback (a fetch app), what is not a file here (a miss, another
 *   method, a dotfile, a directory without index) goes to it instead.
 *
 * @module
 */

import { getLogger } from "../../../../log/mod.ts";
import { close } from "../../../../syscalls/libc.ts";
import {
  AT_FDCWD,
  type FileStat,
  newFileStat,
  openDirectory,
  statAt,
  statFd,
} from "../../../../syscalls/files.ts";
import type { Connection } from "../../../connection.ts";
import { counter, gauge, type Metric } from "../../definition.ts";
import { type HttpParser, METHOD_GET, METHOD_HEAD } from "../http_parser.ts";
import { fieldIndex, fieldValueAt, latin1 } from "../request.ts";
import { reasonPhrase, statusLine } from "../response.ts";
import { DEFAULT_FILE_CACHE, FileCache, type FileEntry, Found } from "./file_cache.ts";
import { encodeSegment, listingPage } from "./listing.ts";
import { TargetDecoder } from "./target.ts";

const log = getLogger(["reactor", "http", "static"]);

/** Settings of a static root. */
export interface StaticOptions {
  /** The directory served at `/`. */
  root: string;
  /** An HTML listing for directories without index.html (default false: 403). */
  listDirectories?: boolean;
  /** Serve dotfiles and dot-directories (default false: 404). */
  dotfiles?: boolean;
  /** Follow symlinks that point outside the root (default false: refused). */
  followSymlinks?: boolean;
  /** The `Cache-Control` value for files (default: none). */
  cacheControl?: string;
  /** Trust a cached file this long before checking it again (default 0: every request). */
  revalidateMs?: number;
  /** Files up to this size are served from memory (default 64 KiB). */
  smallFileBytes?: number;
}

/** What a static answer writes (one per request; reused when written at once). */
export class StaticAnswer {
  status = 200;
  /** The representation sent (null for bare answers: errors, redirects). */
  entry: FileEntry | null = null;
  /** Body range of `entry`. */
  start = 0;
  end = 0;
  /** No body (HEAD). */
  headOnly = false;
  /** `Location` of a redirect. */
  location = "";
  /** A generated body (a listing) and its type. */
  page: Uint8Array | null = null;
  pageType = "";

  /** A copy that stays valid (and keeps its file open) until written. */
  detach(): StaticAnswer {
    const copy = new StaticAnswer();
    Object.assign(copy, this);
    // A body to send from an open fd: hold the file open until written or dropped.
    copy.#retained = copy.entry !== null && copy.entry.bytes === null && this.#hasBody();
    if (copy.#retained) copy.entry!.refs++;
    return copy;
  }

  #retained = false;

  #hasBody(): boolean {
    return !this.headOnly && this.end > this.start && (this.status === 200 || this.status === 206);
  }

  /** Body bytes (for the access log): 0 for HEAD, 304 and 416. */
  get bodyLength(): number {
    if (this.headOnly || this.status === 304 || this.status === 416) return 0;
    return this.entry === null ? (this.page?.length ?? -1) : this.end - this.start;
  }

  /**
   * Writes the answer; returns whether the connection may carry another
   * request (`keepAlive` as given).
   */
  write(conn: Connection, keepAlive: boolean, http10: boolean, date: string): boolean {
    const entry = this.entry;
    // The head's parts of unbounded length: a Location carries the request's
    // query (up to the parser's header limit), the lines the options built.
    const room = HEAD_FIXED_BYTES + this.location.length + this.pageType.length +
      (entry === null ? 0 : entry.typeLines.length + entry.validatorLines.length);
    if (room > headScratch.length) headScratch = new Uint8Array(room);
    const h = headScratch;
    let n = putAscii(h, 0, statusLine(this.status, false));
    n = putAscii(h, n, "Date: ");
    n = putAscii(h, n, date);
    n = putAscii(h, n, "\r\n");
    const body = this.#hasBody();
    if (entry !== null) {
      if (this.status !== 304) n = putBytes(h, n, entry.typeLines);
      n = putBytes(h, n, entry.validatorLines);
      if (this.status === 206) {
        n = putAscii(h, n, `Content-Range: bytes ${this.start}-${this.end - 1}/${entry.size}\r\n`);
      }
    }
    if (this.status === 416) {
      n = putAscii(h, n, `Content-Range: bytes */${entry === null ? 0 : entry.size}\r\n`);
    }
    if (this.location !== "") n = putAscii(h, n, `Location: ${this.location}\r\n`);
    if (this.status === 405) n = putAscii(h, n, "Allow: GET, HEAD\r\n");
    let page = this.page;
    if (entry === null && this.status !== 304) {
      if (page === null) {
        page = reasonBody(this.status);
        this.pageType = "text/plain; charset=utf-8";
      }
      n = putAscii(h, n, `Content-Type: ${this.pageType}\r\n`);
    }
    if (this.status !== 304) {
      const length = entry === null
        ? page!.length
        : this.status === 416
        ? 0
        : this.end - this.start;
      n = putAscii(h, n, "Content-Length: ");
      n = putAscii(h, n, String(length));
      n = putAscii(h, n, "\r\n");
    }
    if (!keepAlive) n = putAscii(h, n, "Connection: close\r\n");
    else if (http10) n = putAscii(h, n, "Connection: keep-alive\r\n");
    h[n++] = 13;
    h[n++] = 10;
    conn.write(h, 0, n);
    if (this.headOnly || this.status === 304 || this.status === 416) return keepAlive;
    if (entry === null) {
      conn.write(page!);
      return keepAlive;
    }
    if (!body) return keepAlive;
    if (entry.bytes !== null) {
      conn.write(entry.bytes, this.start, this.end);
    } else {
      if (!this.#retained) entry.refs++;
      this.#retained = false;
      conn.sendFile(entry, this.start, this.end - this.start);
    }
    return keepAlive;
  }

  /** Releases a detached answer that will never be written (its connection closed). */
  drop(): void {
    if (this.#retained && this.entry !== null) this.entry.release();
    this.#retained = false;
  }
}

const ascii = new TextEncoder();
/** How often the root's path is checked for a swapped symlink. */
const ROOT_CHECK_MS = 1000;
let headScratch = new Uint8Array(16 << 10);
/** Bounds the head's other parts: status line, Date, Content-Range, Allow, the names, CRLFs. */
const HEAD_FIXED_BYTES = 512;

/** The body of a bare answer (error, redirect): its reason phrase, encoded once per status. */
const REASON_BODIES: Uint8Array[] = [];
function reasonBody(status: number): Uint8Array {
  return REASON_BODIES[status] ??= ascii.encode(reasonPhrase(status));
}

function putAscii(out: Uint8Array, at: number, s: string): number {
  for (let k = 0; k < s.length; k++) out[at + k] = s.charCodeAt(k);
  return at + s.length;
}

function putBytes(out: Uint8Array, at: number, b: Uint8Array): number {
  out.set(b, at);
  return at + b.length;
}

/** Header names the static answer reads, lowercase. */
const IF_NONE_MATCH = 0;
const IF_MODIFIED_SINCE = 1;
const RANGE = 2;
const IF_RANGE = 3;
const ACCEPT_ENCODING = 4;
const WANTED = ["if-none-match", "if-modified-since", "range", "if-range", "accept-encoding"].map(
  (s) => ascii.encode(s),
);

/** Counters for /metrics. */
export interface StaticCounters {
  /** Requests answered from the root. */
  requests: number;
  /** 304 answers. */
  notModified: number;
  /** 206 answers. */
  partial: number;
  /** Answers from a sidecar. */
  precompressed: number;
}

/** A directory served at `/`. One per server (worker); shared by its connections. */
export class StaticFiles {
  /** The open-file cache of the root as it resolves now. */
  cache: FileCache;
  readonly counters: StaticCounters = { requests: 0, notModified: 0, partial: 0, precompressed: 0 };
  readonly #options: Required<StaticOptions>;
  readonly #decoder = new TargetDecoder(1024);
  readonly #answer = new StaticAnswer();
  #now = 0;
  /** Where each WANTED header is in the request's `fields` (as fieldIndex says), or -1. */
  readonly #found = new Int32Array(WANTED.length);
  #lastKey = "";
  readonly #lastKeyBytes = new Uint8Array(256);
  #lastKeyLength = -1;

  /** Opens `options.root` (throws a SyscallError when it cannot). */
  constructor(options: StaticOptions) {
    this.#options = {
      listDirectories: false,
      dotfiles: false,
      followSymlinks: false,
      cacheControl: "",
      revalidateMs: DEFAULT_FILE_CACHE.revalidateMs,
      smallFileBytes: DEFAULT_FILE_CACHE.smallFileBytes,
      ...options,
    };
    this.#rootPath = ascii.encode(this.#options.root + "\0");
    this.cache = this.#openRoot();
  }

  #openRoot(): FileCache {
    const o = this.#options;
    const cache = new FileCache(openDirectory(o.root), {
      followSymlinks: o.followSymlinks,
      revalidateMs: o.revalidateMs,
      smallFileBytes: o.smallFileBytes,
      cacheControl: o.cacheControl,
    });
    statFd(cache.rootFd, this.#rootStat);
    return cache;
  }

  /**
   * Once a second: does the root's path still name the directory we hold
   * open? A deploy that swaps a symlink (`current` -> `release-2`) moves
   * it; then the root is opened again and the cache starts afresh.
   */
  #checkRoot(now: number): void {
    this.#rootCheckedAt = now;
    const st = this.#scratchStat;
    if (statAt(AT_FDCWD, this.#rootPath, st) !== 0) return; // gone: keep serving what we hold
    const held = this.#rootStat;
    if (st.ino === held.ino && st.dev === held.dev) return;
    let fresh: FileCache;
    try {
      fresh = this.#openRoot();
    } catch (error) {
      log.warn("the root {root} moved but cannot be opened: {error}", {
        root: this.#options.root,
        error,
      });
      return;
    }
    log.info("the root {root} now names another directory: cache dropped", {
      root: this.#options.root,
    });
    const old = this.cache;
    this.cache = fresh;
    old.close();
  }

  readonly #rootPath: Uint8Array;
  readonly #rootStat: FileStat = newFileStat();
  readonly #scratchStat: FileStat = newFileStat();
  #rootCheckedAt = 0;

  /** The options in effect. */
  get options(): Readonly<Required<StaticOptions>> {
    return this.#options;
  }

  /**
   * The answer to the request whose head `p` holds (captured headers), or
   * null when it is not ours and a fallback exists (`hasFallback`). The
   * answer is reused by the next call: write it now or `detach()` it.
   */
  answer(p: HttpParser, hasFallback: boolean, now: number): StaticAnswer | null {
    const a = this.#answer;
    a.entry = null;
    a.page = null;
    a.location = "";
    a.start = a.end = 0;
    const method = p.method;
    if (method !== METHOD_GET && method !== METHOD_HEAD) {
      if (hasFallback) return null;
      return this.#bare(a, 405, method);
    }
    a.headOnly = method === METHOD_HEAD;
    const d = this.#decoder;
    if (d.decode(p.target, p.targetLength) !== 0) return this.#bare(a, 400, method);
    if (d.hidden && !this.#options.dotfiles) return hasFallback ? null : this.#bare(a, 404, method);
    const key = this.#keyOf(d.path, d.length, d.trailingSlash);
    this.#now = now;
    if (now - this.#rootCheckedAt >= ROOT_CHECK_MS) this.#checkRoot(now);
    const cache = this.cache;
    let found = cache.lookup(key, d.path, d.length, now);
    if (found === Found.Directory) {
      const dirFd = cache.directoryFd;
      cache.directoryFd = -1;
      try {
        if (!d.trailingSlash) return this.#redirectToDirectory(a, p, d, method);
        // index.html under it, cached under the directory's key.
        const n = d.length;
        const path = indexPath(d.path, n);
        found = cache.lookup(key, path, n === 0 ? INDEX.length - 1 : n + INDEX.length, now);
        if (found === Found.Directory) {
          cache.directoryFd >= 0 && close(cache.directoryFd);
          cache.directoryFd = -1;
          found = Found.Missing;
        }
        if (found === Found.Missing) {
          if (this.#options.listDirectories) return this.#listing(a, dirFd, d, method);
          return hasFallback ? null : this.#bare(a, 403, method);
        }
      } finally {
        close(dirFd);
      }
    }
    switch (found) {
      case Found.File:
        // "/file/" names a directory; a file there is not found (as nginx).
        if (d.trailingSlash && d.length > 0 && cache.entry!.path.length === d.length + 1) {
          return hasFallback ? null : this.#bare(a, 404, method);
        }
        break;
      case Found.Missing:
        return hasFallback ? null : this.#bare(a, 404, method);
      case Found.Refused:
        log.debug("refused a path out of the root: {path}", { path: key });
        return hasFallback ? null : this.#bare(a, 404, method);
      case Found.Forbidden:
        return this.#bare(a, 403, method);
      default:
        log.warn("cannot open a file ({errno}): 503", { errno: cache.lastErrno });
        return this.#bare(a, 503, method);
    }
    this.counters.requests++;
    return this.#fileAnswer(a, p, cache.entry!);
  }

  #fileAnswer(a: StaticAnswer, p: HttpParser, identity: FileEntry): StaticAnswer {
    const found = this.#found;
    findHeaders(p, found);
    // Which representation: a sidecar when the client takes it (not for ranges).
    let entry = identity;
    if (
      (identity.br !== null || identity.gz !== null) && found[RANGE] < 0 &&
      found[ACCEPT_ENCODING] >= 0
    ) {
      const accepts = fieldValueAt(p, found[ACCEPT_ENCODING]);
      const now = this.#now;
      const br = acceptsEncoding(accepts, "br") ? this.cache.sidecar(identity, "br", now) : null;
      const gz = br === null && acceptsEncoding(accepts, "gzip")
        ? this.cache.sidecar(identity, "gz", now)
        : null;
      entry = br ?? gz ?? identity;
      if (entry !== identity) this.counters.precompressed++;
    }
    a.entry = entry;
    a.status = 200;
    a.start = 0;
    a.end = entry.size;
    // RFC 9110 13.2.2: If-None-Match, else If-Modified-Since.
    if (found[IF_NONE_MATCH] >= 0) {
      if (etagMatches(fieldValueAt(p, found[IF_NONE_MATCH]), entry.etag)) {
        return this.#notModified(a);
      }
    } else if (found[IF_MODIFIED_SINCE] >= 0) {
      const since = Date.parse(fieldValueAt(p, found[IF_MODIFIED_SINCE]));
      if (!Number.isNaN(since) && entry.mtimeSeconds * 1000 <= since) return this.#notModified(a);
    }
    if (found[RANGE] >= 0 && !a.headOnly) {
      if (found[IF_RANGE] >= 0) {
        const v = fieldValueAt(p, found[IF_RANGE]);
        // A strong entity-tag must match strongly; a date must be the Last-Modified exactly.
        const current = v.startsWith('"') || v.startsWith("W/")
          ? v === entry.etag
          : v === entry.lastModified;
        if (!current) return a;
      }
      const r = parseRange(fieldValueAt(p, found[RANGE]), entry.size);
      if (r === RANGE_IGNORED) return a;
      if (r === RANGE_UNSATISFIABLE) {
        a.status = 416;
        a.start = a.end = 0;
        return a;
      }
      a.status = 206;
      a.start = rangeStart;
      a.end = rangeEnd;
      this.counters.partial++;
    }
    return a;
  }

  #notModified(a: StaticAnswer): StaticAnswer {
    a.status = 304;
    a.start = a.end = 0;
    this.counters.notModified++;
    return a;
  }

  #bare(a: StaticAnswer, status: number, method: number): StaticAnswer {
    a.status = status;
    a.headOnly = method === METHOD_HEAD;
    return a;
  }

  #redirectToDirectory(
    a: StaticAnswer,
    p: HttpParser,
    d: TargetDecoder,
    method: number,
  ): StaticAnswer {
    // Built from the normalized path, encoded again, never from the target
    // as sent: "//evil.example" would be a Location on another host.
    const query = d.queryAt < 0 ? "" : latin1(p.target, d.queryAt, p.targetLength);
    a.location = "/" + encodePath(latin1(d.path, 0, d.length)) + "/" + query;
    return this.#bare(a, 301, method);
  }

  #listing(a: StaticAnswer, dirFd: number, d: TargetDecoder, method: number): StaticAnswer {
    const urlPath = d.length === 0 ? "/" : "/" + latin1(d.path, 0, d.length) + "/";
    try {
      a.page = listingPage(dirFd, urlPath, this.#options.dotfiles);
    } catch (error) {
      log.warn("cannot list {path}: {error}", { path: urlPath, error });
      return this.#bare(a, 500, method);
    }
    a.status = 200;
    a.pageType = "text/html; charset=utf-8";
    return a;
  }

  /** The cache key: the decoded path (and "/" for a directory), reusing the last string. */
  #keyOf(path: Uint8Array, length: number, directory: boolean): string {
    const last = this.#lastKeyBytes;
    const n = length + (directory ? 1 : 0);
    if (n === this.#lastKeyLength) {
      let k = 0;
      while (k < length && path[k] === last[k]) k++;
      if (k === length && (!directory || last[length] === 0x2f)) return this.#lastKey;
    }
    let key = latin1(path, 0, length);
    if (directory) key += "/";
    if (n <= last.length) {
      last.set(path.subarray(0, length));
      if (directory) last[length] = 0x2f;
      this.#lastKeyLength = n;
      this.#lastKey = key;
    }
    return key;
  }

  /** Closes the root and the cached files. */
  close(): void {
    this.cache.close();
  }
}

/** A decoded path (one char per byte) as a URL path: each segment percent-encoded. */
function encodePath(path: string): string {
  return path.split("/").map(encodeSegment).join("/");
}

const INDEX = ascii.encode("index.html\0");
let indexScratch = new Uint8Array(1024);

/** `path[0, n)` + "/index.html" + NUL (or "index.html" for the root). */
function indexPath(path: Uint8Array, n: number): Uint8Array {
  if (indexScratch.length < n + INDEX.length + 1) {
    indexScratch = new Uint8Array(n + INDEX.length + 1);
  }
  const out = indexScratch;
  if (n === 0) {
    out.set(INDEX);
    return out;
  }
  out.set(path.subarray(0, n));
  out[n] = 0x2f;
  out.set(INDEX, n + 1);
  return out;
}

/** Fills `found[k]` with where WANTED[k] is in the request's `fields` (or -1). */
function findHeaders(p: HttpParser, found: Int32Array): void {
  for (let k = 0; k < WANTED.length; k++) {
    found[k] = fieldIndex(p.headBytes, p.fields, 0, p.fieldCount, WANTED[k]);
  }
}

/** If-None-Match against our (strong) tag, by weak comparison (RFC 9110 8.8.3.2). */
function etagMatches(header: string, etag: string): boolean {
  const h = header.trim();
  if (h === "*") return true;
  for (const part of h.split(",")) {
    let t = part.trim();
    if (t.startsWith("W/")) t = t.slice(2);
    if (t === etag) return true;
  }
  return false;
}

/** Whether `accept` (an Accept-Encoding value) takes `coding` with q > 0. */
function acceptsEncoding(accept: string, coding: string): boolean {
  let star = false;
  for (const item of accept.split(",")) {
    const [name, ...params] = item.trim().split(";");
    const token = name.trim().toLowerCase();
    let q = 1;
    for (const param of params) {
      const [k, v] = param.trim().split("=");
      if (k.trim().toLowerCase() === "q") q = Number(v);
    }
    const ok = q > 0;
    if (token === coding || (coding === "gzip" && token === "x-gzip")) return ok;
    if (token === "*") star = ok;
  }
  return star;
}

const RANGE_IGNORED = 0;
const RANGE_UNSATISFIABLE = -1;
let rangeStart = 0;
let rangeEnd = 0;

/**
 * Parses a Range value against a file of `size` bytes (RFC 9110 14.1.2).
 * Returns 1 with `rangeStart`/`rangeEnd` (exclusive) set, RANGE_IGNORED for
 * a value we answer with the whole file (not bytes, several ranges, invalid),
 * or RANGE_UNSATISFIABLE (416).
 */
function parseRange(value: string, size: number): number {
  const v = value.trim();
  if (!v.toLowerCase().startsWith("bytes=")) return RANGE_IGNORED;
  const spec = v.slice(6).trim();
  if (spec.includes(",")) return RANGE_IGNORED; // several: the whole file
  const m = /^(\d*)\s*-\s*(\d*)$/.exec(spec);
  if (m === null || (m[1] === "" && m[2] === "")) return RANGE_IGNORED;
  if (m[1] === "") {
    const suffix = Number(m[2]); // the last N bytes
    if (suffix === 0 || size === 0) return RANGE_UNSATISFIABLE;
    rangeStart = Math.max(0, size - suffix);
    rangeEnd = size;
    return 1;
  }
  const first = Number(m[1]);
  if (m[2] !== "" && Number(m[2]) < first) return RANGE_IGNORED; // invalid: ignore
  if (first >= size) return RANGE_UNSATISFIABLE;
  const last = m[2] === "" ? size - 1 : Number(m[2]);
  rangeStart = first;
  rangeEnd = Math.min(last, size - 1) + 1;
  return 1;
}

/** The static root's counters, for /metrics (the bytes sendfile moved are a connection counter). */
export function staticMetrics(files: StaticFiles): Metric[] {
  const c = files.counters;
  const cache = files.cache;
  return [
    counter("static_requests_total", "Requests answered with a file.", c.requests),
    counter(
      "static_cache_hits_total",
      "File lookups answered from the open-file cache.",
      cache.hits,
    ),
    counter("static_cache_misses_total", "File lookups that opened the file.", cache.misses),
    counter(
      "static_cache_invalidations_total",
      "Cached files dropped because they changed.",
      cache.invalidations,
    ),
    counter("static_not_modified_total", "304 answers.", c.notModified),
    counter("static_partial_total", "206 answers.", c.partial),
    counter("static_precompressed_total", "Answers from a .br or .gz sidecar.", c.precompressed),
    gauge("static_cached_files", "Files in the open-file cache.", cache.size),
  ];
}
