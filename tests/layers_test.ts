/**
 * The layering of docs/architecture.md, checked: every relative import of
 * every source file must point at a layer its own layer may use. A new
 * import that breaks the story (the reactor importing a connection, the
 * connection layer importing a protocol, anything importing the CLI) fails
 * here with the file and the import named.
 */

import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

/** Layer -> the layers it may import (itself included). */
const MAY_IMPORT: Record<string, string[]> = {
  "log": ["log"],
  "syscalls": ["syscalls"],
  "reactor": ["reactor", "syscalls", "log"],
  "handlers": ["handlers", "reactor", "syscalls", "log"],
  "handlers/protocols": ["handlers/protocols", "handlers", "reactor", "syscalls", "log"],
  "server": ["server", "handlers/protocols", "handlers", "reactor", "syscalls", "log"],
  "cli": [
    "cli",
    "server",
    "handlers/protocols",
    "handlers",
    "reactor",
    "syscalls",
    "log",
    "config",
  ],
  "main.ts": ["cli", "syscalls"],
  "mod.ts": ["server", "handlers/protocols", "handlers", "reactor", "syscalls", "log"],
};

/** The layer a repository path belongs to, or null (tests, bench, examples: anything goes). */
function layerOf(path: string): string | null {
  if (path === "main.ts" || path === "mod.ts") return path;
  if (path === "deno.json") return "config";
  if (path.startsWith("handlers/protocols/")) return "handlers/protocols";
  const top = path.split("/")[0];
  return top in MAY_IMPORT ? top : null;
}

function* sourceFiles(dir = ""): Generator<string> {
  for (const entry of Deno.readDirSync(ROOT + dir)) {
    const path = dir + entry.name;
    if (entry.isDirectory) {
      if (!["tests", "bench", "examples", "node_modules", "dist", ".git", "docs"].includes(path)) {
        yield* sourceFiles(path + "/");
      }
    } else if (path.endsWith(".ts") && !path.endsWith("_test.ts")) {
      yield path;
    }
  }
}

function normalize(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "..") out.pop();
    else if (part !== "." && part !== "") out.push(part);
  }
  return out.join("/");
}

Deno.test("layers: every import follows docs/architecture.md", () => {
  const broken: string[] = [];
  let checked = 0;
  for (const file of sourceFiles()) {
    const layer = layerOf(file);
    if (layer === null) continue;
    const text = Deno.readTextFileSync(ROOT + file);
    for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)[^;]*?from\s+"(\.{1,2}\/[^"]+)"/g)) {
      const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/")) : "";
      const target = normalize(`${dir}/${m[1]}`);
      const to = layerOf(target);
      checked++;
      if (to === null || !MAY_IMPORT[layer].includes(to)) {
        broken.push(`${file} (${layer}) imports ${target} (${to ?? "outside the layers"})`);
      }
    }
  }
  assert.ok(checked > 50, `only ${checked} imports found: the scan is broken`);
  assert.deepEqual(broken, [], `imports against the layering:\n${broken.join("\n")}`);
});

Deno.test("layers: the server assembly names no protocol", () => {
  const text = Deno.readTextFileSync(ROOT + "server/server.ts");
  for (const name of ["echo", "http", "proxy"]) {
    assert.doesNotMatch(
      text,
      new RegExp(`protocols/${name}|"${name}"`),
      `server/server.ts names the ${name} protocol`,
    );
  }
});
