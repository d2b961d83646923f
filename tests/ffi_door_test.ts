/**
 * One FFI door: only `syscalls/libc.ts` opens libc. `bench/experiments/ffi.ts`
 * keeps its own bindings because it measures FFI type choices. Every other
 * `.ts` file in the repository takes its bindings from `syscalls/`.
 *
 * Comments are ignored (a doc comment may name the call), strings are not.
 *
 * @module
 */

import assert from "node:assert/strict";
import { relative, resolve, sep } from "node:path";

const ROOT = resolve(import.meta.dirname!, "..");

/** The files allowed to open a library, relative to the root with `/`. */
const ALLOWED = new Set(["syscalls/libc.ts", "bench/experiments/ffi.ts"]);

/** Folders not walked. */
const SKIP = new Set(["node_modules", "dist", ".git"]);

// The method's name is spelled in two pieces so that this file does not show up
// in a plain text search for it.
const METHOD = "dl" + "open";
/** `Deno.<method>` or `Deno["<method>"]`, whitespace allowed around the dot. */
const CALL = new RegExp(
  String.raw`\bDeno\s*(?:\.\s*${METHOD}\b|\[\s*["'\x60]${METHOD}["'\x60]\s*\])`,
);

/** Every `.ts` file under `dir`, relative to ROOT with `/` separators, sorted. */
function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = resolve(dir, entry.name);
    if (entry.isDirectory) {
      if (!SKIP.has(entry.name)) out.push(...tsFiles(path));
    } else if (entry.isFile && entry.name.endsWith(".ts")) {
      out.push(relative(ROOT, path).split(sep).join("/"));
    }
  }
  return out.sort();
}

/**
 * The source with its `//` and `/* *\/` comments replaced by spaces (newlines
 * kept). Strings and template literals are skipped over so that `//` inside
 * them (a URL) does not start a comment; a `/` where an expression may begin
 * starts a regular expression literal, skipped the same way.
 */
function stripComments(src: string): string {
  let out = "";
  let i = 0;
  let prev = ""; // last non-space character of code, to tell a regex from a division
  const blank = (text: string) => text.replace(/[^\n]/g, " ");
  while (i < src.length) {
    const ch = src[i];
    const next = src[i + 1];
    if (ch === "/" && next === "/") {
      const end = src.indexOf("\n", i);
      const stop = end < 0 ? src.length : end;
      out += blank(src.slice(i, stop));
      i = stop;
    } else if (ch === "/" && next === "*") {
      const end = src.indexOf("*/", i + 2);
      const stop = end < 0 ? src.length : end + 2;
      out += blank(src.slice(i, stop));
      i = stop;
    } else if (ch === '"' || ch === "'" || ch === "`") {
      let j = i + 1;
      while (j < src.length && src[j] !== ch) {
        if (src[j] === "\\") j++;
        else if (ch !== "`" && src[j] === "\n") break; // unterminated: stop at the line end
        j++;
      }
      out += src.slice(i, j + 1);
      prev = ch;
      i = j + 1;
    } else if (ch === "/" && (prev === "" || "(,=:[!&|?{};+-*%<>~^".includes(prev))) {
      let j = i + 1;
      let inClass = false;
      while (j < src.length && src[j] !== "\n" && (inClass || src[j] !== "/")) {
        if (src[j] === "\\") j++;
        else if (src[j] === "[") inClass = true;
        else if (src[j] === "]") inClass = false;
        j++;
      }
      out += src.slice(i, j + 1);
      prev = "/";
      i = j + 1;
    } else {
      out += ch;
      if (!/\s/.test(ch)) prev = ch;
      i++;
    }
  }
  return out;
}

/** Whether a source file opens a library itself (outside comments). */
function opensLibrary(src: string): boolean {
  return CALL.test(stripComments(src));
}

Deno.test("ffi door: the comment stripper keeps code and drops comments", () => {
  const call = `Deno.${METHOD}("libc.so.6", {})`;
  assert.equal(opensLibrary(`const lib = ${call};`), true);
  assert.equal(opensLibrary(`const lib = Deno [ "${METHOD}" ]("libc.so.6", {});`), true);
  assert.equal(opensLibrary(`// ${call}\nconst x = 1;`), false);
  assert.equal(opensLibrary(`/**\n * The one place that calls \`Deno.${METHOD}\`.\n */`), false);
  assert.equal(opensLibrary(`const u = "https://example.com/"; const lib = ${call};`), true);
  assert.equal(opensLibrary(`const r = /["'/]/; const lib = ${call};`), true);
  assert.equal(opensLibrary(`const half = a / 2; const lib = ${call}; // b / 2`), true);
});

Deno.test("ffi door: only syscalls/libc.ts and bench/experiments/ffi.ts open libc", () => {
  const files = tsFiles(ROOT);
  assert.ok(files.includes("syscalls/libc.ts"), `the walk from ${ROOT} missed syscalls/libc.ts`);
  const opening = files.filter((f) => opensLibrary(Deno.readTextFileSync(resolve(ROOT, f))));
  // The check finds the real door, so it is not vacuous.
  assert.ok(
    opening.includes("syscalls/libc.ts"),
    `syscalls/libc.ts no longer calls Deno.${METHOD}: is this check still looking for the right thing?`,
  );
  const offending = opening.filter((f) => !ALLOWED.has(f));
  assert.deepEqual(
    offending,
    [],
    `Deno.${METHOD} outside syscalls/libc.ts (and bench/experiments/ffi.ts): ` +
      `${offending.join(", ")}. Import the bound functions from syscalls/libc.ts instead, ` +
      "adding any missing symbol there.",
  );
});
