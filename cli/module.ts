/**
 * `reactor serve --module FILE`: load a module the way `deno serve` does (its
 * default export has a `fetch` method: a Hono app, `export default { fetch }`)
 * and make a protocol of it.
 *
 * @module
 */

import { type FetchAppOptions, fetchProtocol } from "../handlers/protocols/http/app.ts";
import { holdDenoUpgrade } from "../handlers/protocols/http/websocket/mod.ts";
import type { ProtocolDefinition } from "../handlers/protocols/mod.ts";

/** The module cannot be served: one line for the user, exit code 2. */
export class ModuleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModuleError";
  }
}

/** The path or URL of `file` as an import specifier (relative paths against the cwd). */
function specifier(file: string): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(file)) return file; // already a URL (file:, https:, ...)
  const path = file.startsWith("/") ? file : `${Deno.cwd()}/${file}`;
  return new URL(`file://${path}`).href;
}

/**
 * Imports `file` and returns the protocol serving its default export's fetch.
 *
 * @throws {ModuleError} when it cannot be imported or has no fetch
 */
export async function loadModule(
  file: string,
  options: Omit<FetchAppOptions, "handler" | "origin">,
): Promise<ProtocolDefinition> {
  let mod: { default?: unknown };
  // Deno.upgradeWebSocket is ours before the module loads: a module that
  // keeps a reference to it at load time (`const { upgradeWebSocket } =
  // Deno`) gets ours too. Held for the life of the process.
  holdDenoUpgrade();
  try {
    mod = await import(specifier(file));
  } catch (e) {
    throw new ModuleError(`--module ${file}: cannot import it: ${(e as Error).message}`);
  }
  const app = mod.default as { fetch?: unknown } | undefined;
  if (
    app === null || typeof app !== "object" && typeof app !== "function" ||
    typeof app.fetch !== "function"
  ) {
    throw new ModuleError(
      `--module ${file}: its default export has no fetch method (export default { fetch(req) { ... } })`,
    );
  }
  const fetch = (app.fetch as (r: Request, i: unknown) => Response | Promise<Response>).bind(app);
  return fetchProtocol(fetch, options);
}
