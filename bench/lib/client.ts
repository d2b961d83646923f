/**
 * What the bench's own reactor clients (echo, WebSocket) share.
 *
 * @module
 */

import type { ConnectionLimits } from "../../handlers/context.ts";

/** Connection limits for a bench client: it takes any backlog, never pushing back on the server. */
export const CLIENT_LIMITS: ConnectionLimits = {
  highWaterMark: 1 << 30,
  lowWaterMark: 1 << 29,
  maxOutputBytes: 2 ** 31 - 1,
};
