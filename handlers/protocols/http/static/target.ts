/**
 * A request target to a path under the root, as bytes: the query dropped,
 * percent-escapes decoded, `.` and `..` resolved, repeated slashes merged.
 * A `..` that would climb above the root, a NUL, or a broken escape makes the
 * target invalid (400). What comes out is relative (no leading slash) and
 * NUL-terminated, ready for openat2, which confines it once more in the
 * kernel: this is the first wall, `RESOLVE_BENEATH` the second.
 *
 * An escaped slash (`%2f`) is a separator once decoded, as nginx treats it;
 * an escaped backslash (`%5c`) is an ordinary byte of a Linux file name.
 *
 * @module
 */

const SLASH = 0x2f;
const DOT = 0x2e;
const PERCENT = 0x25;
const QUESTION = 0x3f;
const HASH = 0x23;

const HEX = new Int8Array(256).fill(-1);
for (let k = 0; k < 10; k++) HEX[0x30 + k] = k;
for (let k = 0; k < 6; k++) HEX[0x41 + k] = HEX[0x61 + k] = 10 + k;

const WELL_KNOWN = new TextEncoder().encode(".well-known");

/** Decodes request targets into root-relative paths; one per connection or app, reused. */
export class TargetDecoder {
  /** The decoded path: `path[0, length)`, then a NUL. Segments joined by `/`; empty: the root. */
  path: Uint8Array;
  /** Length of the decoded path. */
  length = 0;
  /** The target named a directory: it ended with `/` (or `/.`, `/..`). */
  trailingSlash = false;
  /** A segment starts with a dot (a dotfile or dot-directory other than `/.well-known`). */
  hidden = false;
  /** Where the query (`?...`) starts in the target, or -1. */
  queryAt = -1;

  constructor(maxTarget: number) {
    this.path = new Uint8Array(maxTarget + 2);
  }

  /**
   * Decodes `target[0, length)`. Returns 0, or 400 for a target that names
   * no file under the root (not a path, a broken escape, a NUL, a `..` above
   * the root).
   */
  decode(target: Uint8Array, length: number): number {
    let i = 0;
    if (length > 0 && target[0] !== SLASH) {
      // Absolute form (RFC 9112 3.2.2): skip "scheme://authority".
      let k = 0;
      while (
        k + 2 < length &&
        !(target[k] === 0x3a && target[k + 1] === SLASH && target[k + 2] === SLASH)
      ) k++;
      if (k + 2 >= length) return 400; // "*" or anything else: not a path
      k += 3;
      while (k < length && target[k] !== SLASH && target[k] !== QUESTION && target[k] !== HASH) k++;
      i = k;
    }
    let end = i;
    while (end < length && target[end] !== QUESTION && target[end] !== HASH) end++;
    this.queryAt = end < length && target[end] === QUESTION ? end : -1;
    if (this.path.length < length + 2) this.path = new Uint8Array(length + 2);
    const out = this.path;
    let n = 0; // bytes written
    let segStart = 0; // where the segment being read starts in out
    let trailing = true; // the empty path is the root: a directory
    for (; i <= end; i++) {
      let b = SLASH; // the end of the path ends its last segment
      if (i < end) {
        b = target[i];
        if (b === PERCENT) {
          if (i + 2 >= end) return 400;
          const hi = HEX[target[i + 1]];
          const lo = HEX[target[i + 2]];
          if (hi < 0 || lo < 0) return 400;
          b = (hi << 4) | lo;
          i += 2;
          if (b === 0) return 400;
        }
        if (b !== SLASH) {
          if (n === segStart && n > 0) out[n++] = SLASH, segStart = n;
          out[n++] = b;
          continue;
        }
      }
      // A separator: the segment out[segStart, n) is complete.
      const len = n - segStart;
      if (len === 0) {
        trailing = true; // a leading, repeated or final slash
      } else if (len === 1 && out[segStart] === DOT) {
        n = segStart === 0 ? 0 : segStart - 1; // "." names the directory it is in
        trailing = true;
      } else if (len === 2 && out[segStart] === DOT && out[segStart + 1] === DOT) {
        if (segStart === 0) return 400; // above the root
        let k = segStart - 2; // the parent's last byte
        while (k >= 0 && out[k] !== SLASH) k--;
        n = k < 0 ? 0 : k;
        trailing = true;
      } else {
        trailing = false;
      }
      segStart = n;
    }
    this.length = n;
    out[n] = 0;
    this.trailingSlash = trailing;
    this.hidden = hasHiddenSegment(out, n);
    return 0;
  }
}

/** Whether a segment of `path[0, n)` starts with a dot (a leading `.well-known` excepted). */
function hasHiddenSegment(path: Uint8Array, n: number): boolean {
  for (let k = 0; k < n; k++) {
    if (path[k] !== DOT || (k > 0 && path[k - 1] !== SLASH)) continue;
    if (k === 0 && isWellKnown(path, n)) continue;
    return true;
  }
  return false;
}

function isWellKnown(path: Uint8Array, n: number): boolean {
  const w = WELL_KNOWN;
  if (n < w.length || (n > w.length && path[w.length] !== SLASH)) return false;
  for (let k = 0; k < w.length; k++) if (path[k] !== w[k]) return false;
  return true;
}
