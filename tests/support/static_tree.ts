/**
 * A generated directory for the static-file tests: one file per content
 * type, pattern-byte binaries (4 KiB and 1 MiB), precompressed sidecars,
 * nested directories with and without index.html, dotfiles, `.well-known`,
 * symlinks that stay inside and symlinks that escape to a secret kept in
 * other directories; and a large sparse file whose bytes a reader can
 * regenerate without holding it.
 *
 * @module
 */

import { brotliCompressSync, gzipSync } from "node:zlib";
import { pattern } from "./net.ts";

/** The mtime every generated file gets, so Last-Modified is known exactly. */
export const TREE_MTIME = new Date("2024-01-02T03:04:05Z");
/** `TREE_MTIME` as an IMF-fixdate (RFC 9110 5.6.7). */
export const TREE_MTIME_HTTP = "Tue, 02 Jan 2024 03:04:05 GMT";

/** A generated tree: where it is and what each served file holds. */
export interface StaticTree {
  /** The directory to pass as `--root`. */
  root: string;
  /** The root's parent: holds `secret.txt` beside the root (what `..` would reach). */
  base: string;
  /** Another temp dir holding `secret.txt` (what absolute symlinks point at). */
  outside: string;
  /** The secret's bytes: a marker no response may ever contain. */
  secret: Uint8Array;
  /** The secret as text, for searching in responses. */
  secretText: string;
  /** Every regular file under the root by its URL path ("/sub/index.html"), with its bytes. */
  files: Map<string, Uint8Array>;
  /** Removes every directory made. */
  remove(): void;
}

const enc = new TextEncoder();

/** Content types by file (the extension decides), as the spec lists them. */
export const TYPED_FILES: [string, RegExp][] = [
  ["/index.html", /^text\/html; ?charset=utf-8$/i],
  ["/style.css", /^text\/css; ?charset=utf-8$/i],
  ["/plain.js", /^text\/javascript; ?charset=utf-8$/i],
  ["/mod.mjs", /^text\/javascript; ?charset=utf-8$/i],
  ["/data.json", /^application\/json(; ?charset=utf-8)?$/i],
  ["/logo.svg", /^image\/svg\+xml$/i],
  ["/mod.wasm", /^application\/wasm$/i],
  ["/img.png", /^image\/png$/i],
  ["/photo.jpg", /^image\/jpeg$/i],
  ["/photo.jpeg", /^image\/jpeg$/i],
  ["/anim.gif", /^image\/gif$/i],
  ["/pic.webp", /^image\/webp$/i],
  ["/pic.avif", /^image\/avif$/i],
  ["/favicon.ico", /^image\/(x-icon|vnd\.microsoft\.icon)$/i],
  ["/font.woff2", /^font\/woff2$/i],
  ["/notes.txt", /^text\/plain; ?charset=utf-8$/i],
  ["/doc.pdf", /^application\/pdf$/i],
  ["/clip.mp4", /^video\/mp4$/i],
  ["/blob.unknownext", /^application\/octet-stream$/i],
  ["/README", /^application\/octet-stream$/i],
  ["/UPPER.HTML", /^text\/html; ?charset=utf-8$/i],
];

/** The JavaScript that has `.br` and `.gz` sidecars (compressible, a few KiB). */
export const APP_JS = enc.encode(
  Array.from({ length: 200 }, (_, i) => `export const value${i} = "app ${i}";\n`).join(""),
);

/** Builds the tree in fresh temp dirs. */
export async function makeStaticTree(): Promise<StaticTree> {
  const base = await Deno.makeTempDir({ prefix: "reactor-static-" });
  const outside = await Deno.makeTempDir({ prefix: "reactor-outside-" });
  const root = `${base}/public`;
  const secretText = `TOP-SECRET-${crypto.randomUUID()}`;
  const secret = enc.encode(secretText + "\n");
  await Deno.writeFile(`${base}/secret.txt`, secret);
  await Deno.mkdir(`${base}/secretdir`);
  await Deno.writeFile(`${base}/secretdir/secret.txt`, secret);
  await Deno.writeFile(`${outside}/secret.txt`, secret);
  await Deno.mkdir(`${outside}/dir`);
  await Deno.writeFile(`${outside}/dir/secret.txt`, secret);

  const files = new Map<string, Uint8Array>();
  const put = async (path: string, data: Uint8Array | string) => {
    const bytes = typeof data === "string" ? enc.encode(data) : data;
    const full = root + path;
    await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(full, bytes);
    await Deno.utime(full, TREE_MTIME, TREE_MTIME);
    files.set(path, bytes);
  };

  await put("/index.html", "<!doctype html><title>root index</title>\n");
  await put("/UPPER.HTML", "<p>upper-case extension</p>\n");
  await put("/style.css", "body { color: red; }\n");
  await put("/plain.js", "console.log('plain, no sidecars');\n");
  await put("/mod.mjs", "export default 1;\n");
  await put("/data.json", '{"hello":"world"}\n');
  await put("/logo.svg", '<svg xmlns="http://www.w3.org/2000/svg"/>\n');
  let seed = 1;
  for (
    const p of [
      "/mod.wasm",
      "/img.png",
      "/photo.jpg",
      "/photo.jpeg",
      "/anim.gif",
      "/pic.webp",
      "/pic.avif",
      "/favicon.ico",
      "/font.woff2",
      "/doc.pdf",
      "/clip.mp4",
      "/blob.unknownext",
      "/README",
    ]
  ) await put(p, pattern(seed++, 300 + seed * 7));
  await put("/notes.txt", "plain text notes\n");
  await put("/empty.txt", "");
  await put("/small.bin", pattern(40, 4096));
  await put("/big.bin", pattern(41, 1 << 20));
  await put("/app.js", APP_JS);
  await put("/app.js.br", new Uint8Array(brotliCompressSync(APP_JS)));
  await put("/app.js.gz", new Uint8Array(gzipSync(APP_JS)));
  // Only a gzip sidecar: a br-preferring client gets gzip.
  const onlyGz = enc.encode("p { margin: 0 }\n".repeat(100));
  await put("/only-gz.css", onlyGz);
  await put("/only-gz.css.gz", new Uint8Array(gzipSync(onlyGz)));
  await put("/space name.txt", "a name with a space\n");
  await put("/back\\slash.txt", "a backslash is an ordinary byte on Linux\n");
  await put("/percent%41.txt", "a literal percent sign in the name\n");
  await put("/caf\u00e9.txt", "utf-8 name\n");
  await put("/sub/index.html", "<p>sub index</p>\n");
  await put("/sub/deeper/file.txt", "deep file\n");
  await put("/noindex/a.txt", "a\n");
  await put("/noindex/b.txt", "b\n");
  await put("/noindex/.hidden", "hidden in a listed dir\n");
  await put("/noindex/<tag>&.txt", "a name to escape in HTML\n");
  await put("/noindex/hash#q?.txt", "a name that needs percent-encoding in a link\n");
  await Deno.mkdir(`${root}/noindex/child`);
  // Names that must be encoded in a Location: a host-like directory (an
  // open redirect if sent as //evil.example/) and one with CR LF in its name.
  await put("/evil.example/index.html", "<p>not a host</p>\n");
  await put("/crlf\r\nX-Injected: yes/index.html", "<p>crlf dir</p>\n");
  await put("/.env", "SECRET_KEY=dotenv\n");
  await put("/.git/config", "[core]\n\trepositoryformatversion = 0\n");
  await put("/.git/HEAD", "ref: refs/heads/main\n");
  await put("/a/.hidden", "hidden file in a dir\n");
  await put("/a/visible.txt", "visible file in a dir\n");
  await put("/.hiddendir/file.txt", "file in a hidden dir\n");
  await put("/.well-known/x", "well-known x\n");
  await put("/.well-known/security.txt", "Contact: mailto:x@example.invalid\n");

  // Symlinks that stay inside (relative), and ones that leave.
  await Deno.symlink("small.bin", `${root}/link-inside.bin`);
  await Deno.symlink("sub", `${root}/link-dir`);
  await Deno.symlink("../notes.txt", `${root}/sub/link-up.txt`);
  await Deno.symlink(`${root}/notes.txt`, `${root}/abs-inside.txt`);
  await Deno.symlink(`${outside}/secret.txt`, `${root}/escape-abs.txt`);
  await Deno.symlink("../secret.txt", `${root}/escape-rel.txt`);
  await Deno.symlink("../../secretdir/secret.txt", `${root}/sub/escape-rel2.txt`);
  await Deno.symlink(`${outside}/dir`, `${root}/escape-dir-abs`);
  await Deno.symlink("../secretdir", `${root}/escape-dir-rel`);
  await Deno.symlink("/etc/passwd", `${root}/passwd`);
  // Escapes one step removed: a sidecar and an index.html that point outside.
  await put("/sc.js", "console.log('sidecar escape');\n");
  await Deno.symlink(`${outside}/secret.txt`, `${root}/sc.js.gz`);
  await Deno.symlink("../secret.txt", `${root}/sc.js.br`);
  await Deno.mkdir(`${root}/symidx`);
  await Deno.symlink(`${outside}/secret.txt`, `${root}/symidx/index.html`);
  await Deno.symlink("loop", `${root}/loop`);
  await Deno.symlink("nowhere.txt", `${root}/dangling.txt`);

  return {
    root,
    base,
    outside,
    secret,
    secretText,
    files,
    remove() {
      Deno.removeSync(base, { recursive: true });
      Deno.removeSync(outside, { recursive: true });
    },
  };
}

/** Whether `a` and `b` hold the same bytes (a served body against the tree's file). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The large sparse file: a 16 KiB pattern block at every MiB, zeros between. */
const BLOCK = 16 << 10;
const STRIDE = 1 << 20;

/**
 * Writes a sparse file of `size` bytes (a pattern block at each MiB, holes
 * between) with seek and write: little disk, nothing large in memory.
 */
export async function writeSparseFile(path: string, size: number, seed: number): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await file.truncate(size);
    for (let off = 0; off < size; off += STRIDE) {
      const block = pattern(seed, Math.min(BLOCK, size - off), off);
      await file.seek(off, Deno.SeekMode.Start);
      let done = 0;
      while (done < block.length) done += await file.write(block.subarray(done));
    }
  } finally {
    file.close();
  }
}

/**
 * Returns the index of the first byte of `chunk` (at `offset` in the sparse
 * file of `seed`) that differs from what `writeSparseFile` wrote, or -1.
 */
export function sparseMismatch(chunk: Uint8Array, offset: number, seed: number): number {
  let i = 0;
  while (i < chunk.length) {
    const at = offset + i;
    const inStride = at % STRIDE;
    if (inStride < BLOCK) {
      const n = Math.min(BLOCK - inStride, chunk.length - i);
      const want = pattern(seed, n, at);
      for (let k = 0; k < n; k++) if (chunk[i + k] !== want[k]) return i + k;
      i += n;
    } else {
      const n = Math.min(STRIDE - inStride, chunk.length - i);
      for (let k = 0; k < n; k++) if (chunk[i + k] !== 0) return i + k;
      i += n;
    }
  }
  return -1;
}
