/**
 * WebSocket (RFC 6455) for fetch apps on the reactor: the frame codec
 * (frame.ts), the socket (socket.ts) and the upgrade (upgrade.ts). See
 * docs/websocket.md.
 *
 * @module
 */

export {
  DEFAULT_MAX_MESSAGE,
  FrameParser,
  type FrameSink,
  isValidCloseCode,
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
  upgradeWebSocket,
  type UpgradeWebSocketOptions,
  WebSocketHandshakeError,
} from "./upgrade.ts";

const UPGRADE = [0x75, 0x70, 0x67, 0x72, 0x61, 0x64, 0x65]; // "upgrade"

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
  for (let f = 0; f < count; f++) {
    const o = base + f * 4;
    const s = fields[o];
    if (fields[o + 1] - s !== 7 || (head[s] | 0x20) !== 0x75) continue;
    let k = 1;
    while (k < 7 && (head[s + k] | 0x20) === UPGRADE[k]) k++;
    if (k === 7) return true;
  }
  return false;
}
