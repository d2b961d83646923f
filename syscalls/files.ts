/**
 * Files for static serving: opening a path that cannot leave a directory
 * (openat2 with `RESOLVE_BENEATH`), what a file is (statx: one layout on
 * every architecture, unlike `struct stat`), and sendfile(2) from a file to a
 * socket without the bytes entering JS.
 *
 * Paths are NUL-terminated byte arrays made by the caller (a request's
 * decoded target): nothing here builds a string per call.
 *
 * @module
 */

import { O_NONBLOCK } from "./constants.ts";
import { errno, getdents64, open, sendfile, statx, syscall_openat2 } from "./libc.ts";
import { check } from "./socket.ts";

/** `AT_FDCWD`: a path relative to the working directory. */
export const AT_FDCWD = -100;
/** `O_RDONLY`. */
export const O_RDONLY = 0;
/** `O_DIRECTORY`: fail unless the path is a directory. */
export const O_DIRECTORY = 0o200000;
/** `O_CLOEXEC`. */
export const O_CLOEXEC = 0o2000000;
/** `openat2` resolve flag: no path component may leave the directory (`..`, absolute symlinks, escapes). */
export const RESOLVE_BENEATH = 0x08;
/** `openat2` resolve flag: no `/proc/<pid>/fd`-style magic links. */
export const RESOLVE_NO_MAGICLINKS = 0x02;
/** `SYS_openat2`: the same number on x86_64 and aarch64 (asm-generic table). */
export const SYS_OPENAT2 = 437;
/** `AT_EMPTY_PATH`: statx of the fd itself. */
export const AT_EMPTY_PATH = 0x1000;
/** `AT_STATX_DONT_SYNC`: no round trip for network file systems. */
export const AT_STATX_DONT_SYNC = 0x4000;
/** `STATX_BASIC_STATS`. */
export const STATX_BASIC_STATS = 0x7ff;

/** `S_IFMT` and the two types we tell apart. */
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

/** sizeof(struct statx), the same on every architecture. */
const STATX_SIZE = 256;
/** sizeof(struct open_how) { u64 flags; u64 mode; u64 resolve; }. */
const OPEN_HOW_SIZE = 24;

/** What statx says about a file, in plain numbers. */
export interface FileStat {
  /** Regular file, directory, or anything else. */
  kind: "file" | "directory" | "other";
  /** Size in bytes. */
  size: number;
  /** Modification time, ms since the epoch (with the nanoseconds' fraction). */
  mtimeMs: number;
  /** Inode and device: together they name the file. */
  ino: number;
  dev: number;
}

const statBuffer = new Uint8Array(STATX_SIZE);
const statView = new DataView(statBuffer.buffer);
const EMPTY_PATH = new Uint8Array(1);
const how = new Uint8Array(OPEN_HOW_SIZE);
const howView = new DataView(how.buffer);

function u64(at: number): number {
  return statView.getUint32(at, true) + statView.getUint32(at + 4, true) * 0x100000000;
}

function readStat(out: FileStat): FileStat {
  // struct statx: stx_mode u16 @28, stx_ino u64 @32, stx_size u64 @40,
  // stx_mtime { i64 tv_sec @112; u32 tv_nsec @120 }, stx_dev_major/minor u32 @136/@140.
  const mode = statView.getUint16(28, true);
  const type = mode & S_IFMT;
  out.kind = type === S_IFREG ? "file" : type === S_IFDIR ? "directory" : "other";
  // 64-bit fields as two halves: no BigInt per call (exact below 2^53).
  out.ino = u64(32);
  out.size = u64(40);
  out.mtimeMs = (u64(112) * 1000) + statView.getUint32(120, true) / 1e6;
  out.dev = statView.getUint32(136, true) * 0x100000 + statView.getUint32(140, true);
  return out;
}

/** A fresh FileStat to fill. */
export function newFileStat(): FileStat {
  return { kind: "other", size: 0, mtimeMs: 0, ino: 0, dev: 0 };
}

/** statx of an open fd into `out`; -errno on failure. */
export function statFd(fd: number, out: FileStat): number {
  if (
    statx(fd, EMPTY_PATH, AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, statBuffer) < 0
  ) {
    return -errno();
  }
  readStat(out);
  return 0;
}

/**
 * statx of `path` (NUL-terminated) under `dirfd`, following symlinks, into
 * `out`; -errno on failure. For revalidation only: it does not confine the
 * path (compare the inode with the one opened safely).
 */
export function statAt(dirfd: number, path: Uint8Array, out: FileStat): number {
  if (statx(dirfd, path, AT_STATX_DONT_SYNC, STATX_BASIC_STATS, statBuffer) < 0) return -errno();
  readStat(out);
  return 0;
}

/**
 * Opens the directory at `path` (a plain string: once, at set-up) as the
 * root that `openBeneath` resolves against. Throws a SyscallError.
 */
export function openDirectory(path: string): number {
  const bytes = new TextEncoder().encode(path + "\0");
  return check("open", open(bytes, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0), path);
}

/**
 * Opens `path` (relative, NUL-terminated) under `dirfd` for reading.
 * `beneath`: the kernel refuses any resolution that leaves `dirfd` (a `..`,
 * an absolute symlink, a symlink pointing out): EXDEV. Returns the fd, or
 * -errno (ENOSYS: a kernel before 5.6).
 */
export function openBeneath(dirfd: number, path: Uint8Array, beneath: boolean): number {
  // O_NONBLOCK: a FIFO (or a device) would otherwise block the whole loop
  // in open(2) until a writer comes; regular files ignore it.
  howView.setUint32(0, O_RDONLY | O_CLOEXEC | O_NONBLOCK, true);
  howView.setUint32(16, beneath ? RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS : 0, true);
  const fd = syscall_openat2(SYS_OPENAT2, dirfd, path, how, OPEN_HOW_SIZE);
  return fd < 0 ? -errno() : fd;
}

/** One entry of a directory. */
export interface DirectoryEntry {
  /** The name's bytes as a string, one char per byte (decode as UTF-8 to show it). */
  name: string;
  /** A directory (a symlink counts as what it points to only if `dirfd`'s stat says so). */
  directory: boolean;
}

const DT_DIR = 4;
const DT_LNK = 10;

/**
 * The entries of the directory open as `fd` (from its start; "." and ".."
 * left out), by getdents64. Symlinks are followed (statx) to tell
 * directories. Throws a SyscallError.
 */
export function readDirectory(fd: number): DirectoryEntry[] {
  const buf = new Uint8Array(32 << 10);
  const view = new DataView(buf.buffer);
  const out: DirectoryEntry[] = [];
  const st = newFileStat();
  for (;;) {
    const n = getdents64(fd, buf, buf.length);
    if (n === 0) return out;
    check("getdents64", n);
    // struct linux_dirent64: d_ino u64 @0, d_off i64 @8, d_reclen u16 @16, d_type u8 @18, d_name @19.
    for (let at = 0; at < n;) {
      const reclen = view.getUint16(at + 16, true);
      const type = buf[at + 18];
      let end = at + 19;
      while (buf[end] !== 0) end++;
      const name = String.fromCharCode(...buf.subarray(at + 19, end));
      if (name !== "." && name !== "..") {
        let directory = type === DT_DIR;
        if (type === DT_LNK) {
          const path = buf.slice(at + 19, end + 1);
          directory = statAt(fd, path, st) === 0 && st.kind === "directory";
        }
        out.push({ name, directory });
      }
      at += reclen;
    }
  }
}

/** The largest count one sendfile call takes (what Linux moves at most per call). */
export const SENDFILE_MAX = 0x7ffff000;

/**
 * sendfile(2) with an explicit offset, so the file's own position is never
 * used and one open file can feed many sockets at once. The offset cell is
 * one 8-byte buffer whose address is taken once; offsets above 2^32 are
 * written as two halves (no BigInt).
 */
const offsetCell = new Uint32Array(2);
const offsetPointer = Deno.UnsafePointer.of(offsetCell)!;

/**
 * Sends up to `count` bytes of `fileFd` from `offset` to `socketFd`. Returns
 * the bytes sent, 0 at the file's end, or -1 with errno set (EAGAIN: the
 * socket is full).
 */
export function sendFileRange(
  socketFd: number,
  fileFd: number,
  offset: number,
  count: number,
): number {
  offsetCell[0] = offset >>> 0;
  offsetCell[1] = offset > 0xffffffff ? Math.floor(offset / 0x100000000) : 0;
  return sendfile(socketFd, fileFd, offsetPointer, count > SENDFILE_MAX ? SENDFILE_MAX : count);
}
