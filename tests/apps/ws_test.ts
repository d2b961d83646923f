/**
 * The WebSocket suite (ws_suite.ts) on Deno.serve, the oracle, and on
 * reactor's `serve` from mod.ts, with the same expectations.
 *
 * @module
 */

import { serve } from "../../mod.ts";
import type { ServeFn } from "./suite.ts";
import { defineWebSocketSuite } from "./ws_suite.ts";

defineWebSocketSuite("deno-serve", Deno.serve);
defineWebSocketSuite("reactor", serve as unknown as ServeFn);
