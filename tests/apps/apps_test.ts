/**
 * The app suite (suite.ts) on Deno.serve, the oracle, and on reactor's own
 * `serve` from mod.ts as soon as it exists.
 *
 * @module
 */

import { defineAppSuite, type ServeFn } from "./suite.ts";

defineAppSuite("deno-serve", Deno.serve);

// ---------------------------------------------------------------------------
// REACTOR: the same suite on mod.ts's `serve`. It switches itself on once
// mod.ts exports a function named `serve`; until then only the oracle runs.
// (A dynamic import, so this file type-checks before `serve` exists.)
const mod: Record<string, unknown> = { ...(await import("../../mod.ts")) };
if (typeof mod.serve === "function") {
  defineAppSuite("reactor", mod.serve as ServeFn);
} else {
  console.log("apps_test: mod.ts exports no serve() yet; only the deno-serve run is registered");
}
