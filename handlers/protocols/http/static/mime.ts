/**
 * Content-Type from a file name's extension: the types a web front-end, a
 * docs site or a downloads directory needs. Text types say `charset=utf-8`
 * (what build tools write). Anything else is `application/octet-stream`, so
 * a browser never guesses (with `X-Content-Type-Options: nosniff`).
 *
 * @module
 */

/** The type for names with no known extension. */
const DEFAULT_TYPE = "application/octet-stream";

const UTF8 = "; charset=utf-8";

/** Extension (lowercase, no dot) to Content-Type. */
const CONTENT_TYPES: ReadonlyMap<string, string> = new Map([
  ["html", "text/html" + UTF8],
  ["htm", "text/html" + UTF8],
  ["css", "text/css" + UTF8],
  ["js", "text/javascript" + UTF8],
  ["mjs", "text/javascript" + UTF8],
  ["cjs", "text/javascript" + UTF8],
  ["json", "application/json"],
  ["map", "application/json"],
  ["webmanifest", "application/manifest+json"],
  ["xml", "application/xml"],
  ["txt", "text/plain" + UTF8],
  ["md", "text/markdown" + UTF8],
  ["csv", "text/csv" + UTF8],
  ["svg", "image/svg+xml"],
  ["wasm", "application/wasm"],
  ["png", "image/png"],
  ["jpg", "image/jpeg"],
  ["jpeg", "image/jpeg"],
  ["gif", "image/gif"],
  ["webp", "image/webp"],
  ["avif", "image/avif"],
  ["ico", "image/x-icon"],
  ["bmp", "image/bmp"],
  ["woff", "font/woff"],
  ["woff2", "font/woff2"],
  ["ttf", "font/ttf"],
  ["otf", "font/otf"],
  ["pdf", "application/pdf"],
  ["zip", "application/zip"],
  ["gz", "application/gzip"],
  ["tar", "application/x-tar"],
  ["mp4", "video/mp4"],
  ["webm", "video/webm"],
  ["ogg", "audio/ogg"],
  ["mp3", "audio/mpeg"],
  ["wav", "audio/wav"],
]);

/** The Content-Type for a file name (or path): by its last extension, case-insensitively. */
export function contentTypeOf(name: string): string {
  const slash = name.lastIndexOf("/");
  const dot = name.lastIndexOf(".");
  if (dot <= slash + 1) return DEFAULT_TYPE; // no extension, or a dotfile's name
  return CONTENT_TYPES.get(name.slice(dot + 1).toLowerCase()) ?? DEFAULT_TYPE;
}
