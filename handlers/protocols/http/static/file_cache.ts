/**
 * The open-file cache of a static root: what a path resolved to (an open fd,
 * or the bytes of a small file), its validators and its prebuilt header
 * lines, so a request for a known file costs one statx and no open.
 *
 * - **Opening**: openat2 relative to the root's directory fd with
 *   `RESOLVE_BENEATH` (unless symlinks out are allowed): the kernel refuses
 *   any path that leaves the root, whatever the request said.
 * - **Revalidation**: an entry is trusted for `revalidateMs` (default 0:
 *   every request). Then the path is stat'ed again and the entry kept only
 *   if it still names the same file (device, inode), with the same size and
 *   modification time. A file replaced (by rename, or rewritten in place) is
 *   opened afresh, so it is never sent with a stale length. A file that
 *   shrinks while a response is being sent from it is caught by the
 *   connection (sendfile ends early: the connection is reset).
 * - **Small files** (up to `smallFileBytes`) are read once and kept in
 *   memory, within `memoryBytes` in all: their responses leave with the
 *   head in one `send`. Larger files keep their fd open and go by sendfile.
 * - **Sidecars**: `x.br` and `x.gz` next to `x` are looked up when `x` is
 *   opened (and again whenever `x` changes): precompressed variants.
 * - **Bounds**: at most `maxEntries` entries; the oldest goes first. An
 *   evicted entry's fd closes once no response is still sending from it.
 *
 * @module
 */

import { close, errno, read } from "../../../../syscalls/libc.ts";
import {
  type FileStat,
  newFileStat,
  openBeneath,
  statAt,
  statFd,
} from "../../../../syscalls/files.ts";
import {
  EACCES,
  EINTR,
  ELOOP,
  EMFILE,
  ENFILE,
  ENOMEM,
  EPERM,
  EXDEV,
} from "../../../../syscalls/errno.ts";
import type { FileSource } from "../../../connection.ts";
import { latin1 } from "../request.ts";
import { contentTypeOf } from "./mime.ts";

const ascii = new TextEncoder();

/** Settings of a FileCache. */
export interface FileCacheOptions {
  /** Follow symlinks that point outside the root (default false: refused). */
  followSymlinks: boolean;
  /** Trust an entry this long before stat'ing its path again (default 0: every request). */
  revalidateMs: number;
  /** Files up to this size are kept in memory (default 64 KiB). */
  smallFileBytes: number;
  /** Memory for small files in all (default 32 MiB). */
  memoryBytes: number;
  /** Entries at most (default 4096). */
  maxEntries: number;
  /** The `Cache-Control` value for files, or "" for none. */
  cacheControl: string;
}

/** Defaults of FileCacheOptions. */
export const DEFAULT_FILE_CACHE: FileCacheOptions = {
  followSymlinks: false,
  revalidateMs: 0,
  smallFileBytes: 64 << 10,
  memoryBytes: 32 << 20,
  maxEntries: 4096,
  cacheControl: "",
};

/** One representation of a file: the identity bytes, or a `.br`/`.gz` sidecar. */
export class FileEntry implements FileSource {
  /** The open file; -1 when its bytes are in `bytes` (or once closed). */
  fd: number;
  /** The file's bytes, for a small file; else null. */
  bytes: Uint8Array | null = null;
  /** Root-relative path, NUL-terminated (for revalidation). */
  readonly path: Uint8Array;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ino: number;
  readonly dev: number;
  /** Strong validator: mtime and size (and the encoding for a sidecar). */
  readonly etag: string;
  /** IMF-fixdate of the modification time. */
  readonly lastModified: string;
  /** The mtime in whole seconds (what If-Modified-Since compares). */
  readonly mtimeSeconds: number;
  /** "Content-Type", "Accept-Ranges" (and "Content-Encoding") lines. */
  typeLines: Uint8Array = new Uint8Array(0);
  /** "Last-Modified", "ETag" (and "Cache-Control", "Vary") lines: also sent with 304. */
  validatorLines: Uint8Array = new Uint8Array(0);
  /** The Content-Type (for a sidecar opened again). */
  type = "";
  /** The `.br` and `.gz` sidecars (identity entries only). */
  br: FileEntry | null = null;
  gz: FileEntry | null = null;
  /** `reactor.now` when the path was last checked. */
  checkedAt = 0;
  /** Responses still sending from `fd`. */
  refs = 0;
  /** Out of the cache: close `fd` once `refs` is 0. */
  dead = false;

  constructor(fd: number, path: Uint8Array, stat: FileStat, encoding: string) {
    this.fd = fd;
    this.path = path;
    this.size = stat.size;
    this.mtimeMs = stat.mtimeMs;
    this.ino = stat.ino;
    this.dev = stat.dev;
    this.mtimeSeconds = Math.floor(stat.mtimeMs / 1000);
    const suffix = encoding === "" ? "" : "-" + encoding;
    this.etag = `"${Math.floor(stat.mtimeMs).toString(16)}-${stat.size.toString(16)}${suffix}"`;
    this.lastModified = new Date(this.mtimeSeconds * 1000).toUTCString();
  }

  /** Builds the header lines (once the sidecars are known). */
  buildLines(type: string, encoding: string, cacheControl: string, vary: boolean): void {
    this.type = type;
    let t = `Content-Type: ${type}\r\nAccept-Ranges: bytes\r\n`;
    if (encoding !== "") t += `Content-Encoding: ${encoding}\r\n`;
    let v = `Last-Modified: ${this.lastModified}\r\nETag: ${this.etag}\r\n`;
    if (cacheControl !== "") v += `Cache-Control: ${cacheControl}\r\n`;
    if (vary) v += "Vary: Accept-Encoding\r\n";
    this.typeLines = ascii.encode(t);
    this.validatorLines = ascii.encode(v);
  }

  /** Whether `stat` still describes the file this entry was made from. */
  sameAs(stat: FileStat): boolean {
    return stat.kind === "file" && stat.ino === this.ino && stat.dev === this.dev &&
      stat.size === this.size && stat.mtimeMs === this.mtimeMs;
  }

  /** A response is done sending from this file. */
  release(): void {
    if (--this.refs === 0 && this.dead) this.#closeFd();
  }

  /** Out of the cache: closes now, or when the last response sending from it is done. */
  retire(): void {
    this.dead = true;
    this.br?.retire();
    this.gz?.retire();
    if (this.refs === 0) this.#closeFd();
  }

  #closeFd(): void {
    if (this.fd >= 0) close(this.fd);
    this.fd = -1;
  }
}

/** What a lookup found. */
export const Found = {
  /** A regular file: `cache.entry`. */
  File: 0,
  /** A directory (its fd in `cache.directoryFd`, owned by the caller). */
  Directory: 1,
  /** Nothing there (or not something we serve: a device, a socket). */
  Missing: 2,
  /** A symlink out of the root, refused. */
  Refused: 3,
  /** Permission denied. */
  Forbidden: 4,
  /** Out of fds or memory: try later. */
  Busy: 5,
} as const;
/** One of the Found values. */
export type Found = typeof Found[keyof typeof Found];

/** The cache of one root. */
export class FileCache {
  readonly options: FileCacheOptions;
  /** The root directory's fd: the cache owns it (`close` closes it). */
  readonly rootFd: number;
  /** The last lookup's entry (Found.File). */
  entry: FileEntry | null = null;
  /** The last lookup's directory fd (Found.Directory): close it when done. */
  directoryFd = -1;
  /** The errno of the last failed open. */
  lastErrno = 0;
  /** Lookups answered from the cache. */
  hits = 0;
  /** Lookups that opened the file. */
  misses = 0;
  /** Entries dropped because their file changed. */
  invalidations = 0;
  readonly #entries = new Map<string, FileEntry>();
  readonly #stat: FileStat = newFileStat();
  #memory = 0;

  constructor(rootFd: number, options: Partial<FileCacheOptions> = {}) {
    this.rootFd = rootFd;
    this.options = { ...DEFAULT_FILE_CACHE, ...options };
  }

  /** Entries cached now. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Finds `key` (the normalized path, a cache key) whose NUL-terminated
   * bytes are `path[0, length]`. `now` is the reactor's clock.
   */
  lookup(key: string, path: Uint8Array, length: number, now: number): Found {
    const cached = this.#entries.get(key);
    if (cached !== undefined) {
      if (now - cached.checkedAt < this.options.revalidateMs && this.options.revalidateMs > 0) {
        this.hits++;
        this.entry = cached;
        return Found.File;
      }
      const st = this.#stat;
      if (statAt(this.rootFd, cached.path, st) === 0 && cached.sameAs(st)) {
        cached.checkedAt = now;
        this.hits++;
        this.entry = cached;
        return Found.File;
      }
      this.invalidations++;
      this.#drop(key, cached);
    }
    this.misses++;
    return this.#open(key, path, length, now);
  }

  #open(key: string, path: Uint8Array, length: number, now: number): Found {
    const beneath = !this.options.followSymlinks;
    const fd = openBeneath(this.rootFd, length === 0 ? DOT_PATH : path, beneath);
    if (fd < 0) return this.#failed(-fd);
    const st = this.#stat;
    if (statFd(fd, st) < 0) {
      close(fd);
      return Found.Missing;
    }
    if (st.kind === "directory") {
      this.directoryFd = fd;
      return Found.Directory;
    }
    if (st.kind !== "file") {
      close(fd);
      return Found.Missing;
    }
    const own = path.slice(0, length + 1);
    const entry = this.#entryFor(fd, own, st, "");
    if (entry === null) return Found.Busy;
    entry.checkedAt = now;
    // Sidecars: x.br and x.gz, opened under the same rules.
    entry.br = this.#sidecar(own, length, BR, "br", now);
    entry.gz = this.#sidecar(own, length, GZ, "gzip", now);
    const type = contentTypeOf(latin1(own, 0, length)); // the file's name, not the key ("/" is index.html)
    const vary = entry.br !== null || entry.gz !== null;
    const cc = this.options.cacheControl;
    entry.buildLines(type, "", cc, vary);
    entry.br?.buildLines(type, "br", cc, true);
    entry.gz?.buildLines(type, "gzip", cc, true);
    this.#add(key, entry);
    this.entry = entry;
    return Found.File;
  }

  /**
   * The `which` sidecar of `identity` as it is now: checked like the file
   * (statx of its path), opened again if it changed, dropped if it is gone.
   * A deploy may replace a file and its sidecars in any order.
   */
  sidecar(identity: FileEntry, which: "br" | "gz", now: number): FileEntry | null {
    const side = identity[which];
    if (side === null) return null;
    const o = this.options;
    if (o.revalidateMs > 0 && now - side.checkedAt < o.revalidateMs) return side;
    const st = this.#stat;
    if (statAt(this.rootFd, side.path, st) === 0 && side.sameAs(st)) {
      side.checkedAt = now;
      return side;
    }
    this.invalidations++;
    if (side.bytes !== null) this.#memory -= side.bytes.length;
    side.retire();
    const length = identity.path.length - 1;
    const encoding = which === "br" ? "br" : "gzip";
    const fresh = this.#sidecar(identity.path, length, which === "br" ? BR : GZ, encoding, now);
    fresh?.buildLines(identity.type, encoding, o.cacheControl, true);
    identity[which] = fresh;
    return fresh;
  }

  #sidecar(
    path: Uint8Array,
    length: number,
    ext: Uint8Array,
    encoding: string,
    now: number,
  ): FileEntry | null {
    const p = new Uint8Array(length + ext.length + 1);
    p.set(path.subarray(0, length));
    p.set(ext, length);
    const fd = openBeneath(this.rootFd, p, !this.options.followSymlinks);
    if (fd < 0) return null;
    const st = newFileStat();
    if (statFd(fd, st) < 0 || st.kind !== "file") {
      close(fd);
      return null;
    }
    const entry = this.#entryFor(fd, p, st, encoding);
    if (entry !== null) entry.checkedAt = now;
    return entry;
  }

  /** An entry for an open file: small files are read into memory and their fd closed. */
  #entryFor(fd: number, path: Uint8Array, st: FileStat, encoding: string): FileEntry | null {
    const entry = new FileEntry(fd, path, st, encoding);
    const o = this.options;
    if (st.size <= o.smallFileBytes && this.#memory + st.size <= o.memoryBytes) {
      const bytes = readAll(fd, st.size);
      if (bytes !== null) {
        entry.bytes = bytes;
        this.#memory += bytes.length;
        close(fd);
        entry.fd = -1;
      }
    }
    return entry;
  }

  #add(key: string, entry: FileEntry): void {
    const entries = this.#entries;
    if (entries.size >= this.options.maxEntries) {
      const oldest = entries.keys().next().value as string;
      this.#drop(oldest, entries.get(oldest)!);
    }
    entries.set(key, entry);
  }

  #drop(key: string, entry: FileEntry): void {
    this.#entries.delete(key);
    for (const e of [entry, entry.br, entry.gz]) {
      if (e !== null && e.bytes !== null) this.#memory -= e.bytes.length;
    }
    entry.retire();
  }

  #failed(e: number): Found {
    this.lastErrno = e;
    switch (e) {
      case EXDEV: // RESOLVE_BENEATH refused a way out
      case ELOOP: // a symlink refused
        return Found.Refused;
      case EACCES:
      case EPERM:
        return Found.Forbidden;
      case ENFILE:
      case EMFILE:
      case ENOMEM:
        return Found.Busy;
      default: // ENOENT, ENOTDIR, ENAMETOOLONG, ...
        return Found.Missing;
    }
  }

  /** Closes every entry (responses still sending close theirs when done) and the root. */
  close(): void {
    for (const [key, entry] of this.#entries) this.#drop(key, entry);
    close(this.rootFd);
  }
}

const DOT_PATH = new Uint8Array([0x2e, 0]);
const BR = ascii.encode(".br");
const GZ = ascii.encode(".gz");

/** Reads a whole small file from its start; null if it changed size or failed. */
function readAll(fd: number, size: number): Uint8Array | null {
  const out = new Uint8Array(size);
  let at = 0;
  while (at < size) {
    const n = read(fd, at === 0 ? out : out.subarray(at), size - at);
    if (n > 0) {
      at += n;
      continue;
    }
    if (n < 0 && errno() === EINTR) continue;
    return null; // shorter than it said (changing under us) or an error: use the fd
  }
  return out;
}
