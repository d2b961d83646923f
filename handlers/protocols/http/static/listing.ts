/**
 * The HTML page listing a directory (`--list`): names escaped, links
 * percent-encoded byte by byte, directories first and marked with a trailing
 * slash, dotfiles left out unless they are served. Read with getdents64 from
 * the directory fd that was opened beneath the root, so the listing is of
 * exactly the directory that was checked, and needs no path permission.
 *
 * @module
 */

import { readDirectory } from "../../../../syscalls/files.ts";
import { latin1Bytes } from "../request.ts";

const encoder = new TextEncoder();
const utf8 = new TextDecoder(); // not fatal: a name that is not UTF-8 shows U+FFFD

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A name's bytes (one char per byte) as a URL path segment. */
export function encodeSegment(raw: string): string {
  let out = "";
  for (let k = 0; k < raw.length; k++) {
    const b = raw.charCodeAt(k);
    const c = raw[k];
    out += /[A-Za-z0-9\-._~!$&'()*+,;=:@]/.test(c)
      ? c
      : "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

function display(raw: string): string {
  return escapeHtml(utf8.decode(latin1Bytes(raw)));
}

/** The listing of the open directory `dirFd`, shown at `urlPath` (ending in "/"). */
export function listingPage(dirFd: number, urlPath: string, dotfiles: boolean): Uint8Array {
  const dirs: string[] = [];
  const files: string[] = [];
  for (const e of readDirectory(dirFd)) {
    if (!dotfiles && e.name.startsWith(".")) continue;
    (e.directory ? dirs : files).push(e.name);
  }
  dirs.sort();
  files.sort();
  const rows: string[] = [];
  if (urlPath !== "/") rows.push(`<li><a href="../">../</a></li>`);
  for (const d of dirs) rows.push(`<li><a href="${encodeSegment(d)}/">${display(d)}/</a></li>`);
  for (const f of files) rows.push(`<li><a href="${encodeSegment(f)}">${display(f)}</a></li>`);
  const t = display(urlPath);
  return encoder.encode(
    `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Index of ${t}</title></head>\n` +
      `<body><h1>Index of ${t}</h1>\n<ul>\n${rows.join("\n")}\n</ul>\n</body></html>\n`,
  );
}
