/**
 * WebSocket (RFC 6455) for fetch apps on the reactor: the frame codec
 * (frame.ts), the socket (socket.ts) and the upgrade (upgrade.ts). Code
 * outside this folder imports it from here. See docs/websocket.md.
 *
 * @module
 */

import { fieldIndex, latin1Bytes } from "../request.ts";

export {
  DEFAULT_MAX_MESSAGE,
  FrameParser,
  type FrameSink,
  isValidCloseCode,
  MAX_MAX_MESSAGE,
  MIN_MAX_MESSAGE,
  unmask,
  writeFrameHeader,
} from "./frame.ts";
export {
  ServerWebSocket,
  webSocketMetrics,
  type WebSocketSettings,
  webSocketSettings,
  WebSocketStats,
} from "./socket.ts";
export {
  holdDenoUpgrade,
  offerUpgrade,
  releaseDenoUpgrade,
  UpgradeTicket,
  upgradeWebSocket,
  type UpgradeWebSocketOptions,
  WebSocketHandshakeError,
} from "./upgrade.ts";

const UPGRADE = latin1Bytes("upgrade");

/**
 * Whether a request's captured fields (4 ints each from `base`: name and
 * value offsets in `head`) include an `Upgrade` field: the cheap test that
 * offers a GET the upgrade.
 */
export function hasUpgradeField(
  head: Uint8Array,
  fields: Int32Array,
  base: number,
  count: number,
): boolean {
  return fieldIndex(head, fields, base, count, UPGRADE) >= 0;
}
