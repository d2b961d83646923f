/**
 * The HTML page listing a directory (`--list`): names escaped, links
 * percent-encoded, directories first and marked with a trailing slash,
 * dotfiles left out unless they are served. Read through `/proc/self/fd/N`
 * of the directory fd that was opened beneath the root, so the listing is
 * of exactly the directory that was checked, not of a path looked up again.
 *
 * @module
 */

const encoder = new TextEncoder();

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The listing of the open directory `dirFd`, shown at `urlPath` (as sent, ending in "/"). */
export function listingPage(dirFd: number, urlPath: string, dotfiles: boolean): Uint8Array {
  const dirs: string[] = [];
  const files: string[] = [];
  for (const e of Deno.readDirSync(`/proc/self/fd/${dirFd}`)) {
    if (!dotfiles && e.name.startsWith(".")) continue;
    (e.isDirectory ? dirs : files).push(e.name);
  }
  dirs.sort();
  files.sort();
  let title = urlPath;
  try {
    title = decodeURIComponent(urlPath);
  } catch {
    // shown as sent
  }
  const rows: string[] = [];
  if (urlPath !== "/") rows.push(`<li><a href="../">../</a></li>`);
  for (const d of dirs) {
    rows.push(`<li><a href="${encodeURIComponent(d)}/">${escapeHtml(d)}/</a></li>`);
  }
  for (const f of files) {
    rows.push(`<li><a href="${encodeURIComponent(f)}">${escapeHtml(f)}</a></li>`);
  }
  const t = escapeHtml(title);
  return encoder.encode(
    `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Index of ${t}</title></head>\n` +
      `<body><h1>Index of ${t}</h1>\n<ul>\n${rows.join("\n")}\n</ul>\n</body></html>\n`,
  );
}
