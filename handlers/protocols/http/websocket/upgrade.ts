/**
 * The WebSocket upgrade (RFC 6455 section 4.2) of a request our fetch server
 * produced: `upgradeWebSocket(request, options)` returns `{ socket,
 * response }` as `Deno.upgradeWebSocket` does, and while a fetch server runs,
 * `Deno.upgradeWebSocket` itself is this function (requests that are not
 * ours go to Deno's own), so apps written for Deno.serve, Hono's
 * `upgradeWebSocket` among them, run unchanged.
 *
 * The fetch protocol (app.ts) offers the upgrade for a GET with an `Upgrade`
 * field (`offerUpgrade`), stops parsing after it (bytes behind it may be
 * frames), and, when the handler answers with the response made here, writes
 * the 101 and hands the connection to the socket (`UpgradeTicket.accept`).
 * Any other answer: HTTP goes on.
 *
 * Handshake checks, each a `WebSocketHandshakeError` (a TypeError with Deno's
 * message where Deno has one) that the fetch app answers with its status
 * unless an `onError` decides: `Upgrade` must name `websocket` and
 * `Connection` `upgrade` (tokens, any case), `Sec-WebSocket-Key` must be 16
 * bytes in base64, the method GET on HTTP/1.1 (400), `Sec-WebSocket-Version`
 * 13 (426 with `Sec-WebSocket-Version: 13`); a `protocol` option the client
 * did not offer (400; Deno throws the same TypeError).
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { Connection } from "../../../connection.ts";
import { ServerRequest } from "../request.ts";
import { ServerWebSocket, type WebSocketSettings } from "./socket.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** Options of `upgradeWebSocket`, as `Deno.UpgradeWebSocketOptions`. */
export interface UpgradeWebSocketOptions {
  /** The subprotocol to accept; it must be among those the client offered. */
  protocol?: string;
  /** Seconds without a frame from the peer before a ping, times two; 0: never. Default 30. */
  idleTimeout?: number;
}

/** A handshake that cannot be accepted: the answer is `status` (400, or 426 for the version). */
export class WebSocketHandshakeError extends TypeError {
  /** The HTTP status the fetch app answers with. */
  readonly status: number;
  /**
   * A refused handshake.
   *
   * @param message why (Deno's wording where Deno has one)
   * @param status 400 or 426
   */
  constructor(message: string, status = 400) {
    super(message);
    this.name = "TypeError";
    this.status = status;
  }

  /** The answer: the status, the reason as text, and the version we speak for a 426. */
  response(): Response {
    const headers: Record<string, string> = { "content-type": "text/plain;charset=UTF-8" };
    if (this.status === 426) headers["sec-websocket-version"] = "13";
    return new Response(this.message, { status: this.status, headers });
  }
}

/** What the fetch protocol knows of a request that may be upgraded; see the module comment. */
export class UpgradeTicket {
  /** The sockets' settings (message limit, counters). */
  readonly settings: WebSocketSettings;
  /** Whether the request was HTTP/1.0 (never upgraded). */
  readonly http10: boolean;
  /** The socket made by `upgradeWebSocket`, or null. */
  socket: ServerWebSocket | null = null;
  /** The 101 response made by `upgradeWebSocket`, or null. */
  response: Response | null = null;

  /**
   * @param settings the server's WebSocket settings
   * @param http10 the request was HTTP/1.0
   */
  constructor(settings: WebSocketSettings, http10: boolean) {
    this.settings = settings;
    this.http10 = http10;
  }

  /** Whether `res` is this ticket's 101 (the handler accepted the upgrade). */
  accepts(res: Response | null): boolean {
    return res !== null && res === this.response && this.socket !== null;
  }

  /** Writes the 101 on `conn` and hands it to the socket with the bytes read past the request. */
  accept(conn: Connection, pending: Uint8Array | null, date: string): void {
    let head = "HTTP/1.1 101 Switching Protocols\r\n";
    for (const [name, value] of this.response!.headers) head += `${name}: ${value}\r\n`;
    head += `date: ${date}\r\n\r\n`;
    conn.write(encoder.encode(head));
    const socket = this.socket!;
    // The request may live on (an app's closure): let the response and socket go.
    this.socket = null;
    this.response = null;
    socket.accept(conn, pending);
  }

  /** The connection closed before the 101 (or the 101 was never sent): the socket reports it. */
  lost(why = "the client went away before the upgrade"): void {
    this.socket?.abandon(why);
  }
}

const encoder = new TextEncoder();
const tickets = new WeakMap<Request, UpgradeTicket>();

/** The fetch protocol offers the upgrade of `request` (a GET with an Upgrade field). */
export function offerUpgrade(request: Request, ticket: UpgradeTicket): void {
  tickets.set(request, ticket);
}

/** Whether `value` (a comma-separated list) holds `token`, in any case. */
function hasToken(value: string | null, token: string): boolean {
  if (value === null) return false;
  for (const part of value.split(",")) if (part.trim().toLowerCase() === token) return true;
  return false;
}

const KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/; // 16 bytes in base64

/**
 * Upgrades `request` (from our fetch server) to a WebSocket: returns the
 * socket and the 101 response the handler must return. As
 * `Deno.upgradeWebSocket`; see the module comment for the checks.
 *
 * @example Usage
 * ```ts ignore
 * serve({ port: 8000 }, (req) => {
 *   const { socket, response } = upgradeWebSocket(req);
 *   socket.onmessage = (e) => socket.send(e.data);
 *   return response;
 * });
 * ```
 *
 * @throws {WebSocketHandshakeError} when the request is not a valid WebSocket handshake
 */
export function upgradeWebSocket(
  request: Request,
  options: UpgradeWebSocketOptions = {},
): Deno.WebSocketUpgrade {
  const ticket = tickets.get(request);
  if (ticket === undefined && !(request instanceof ServerRequest)) {
    return DENO_UPGRADE.call(Deno, request, options); // not a request of ours
  }
  const headers = request.headers;
  if (!hasToken(headers.get("upgrade"), "websocket")) {
    throw new WebSocketHandshakeError("Invalid Header: 'upgrade' header must contain 'websocket'");
  }
  if (!hasToken(headers.get("connection"), "upgrade")) {
    throw new WebSocketHandshakeError("Invalid Header: 'connection' header must contain 'Upgrade'");
  }
  const key = headers.get("sec-websocket-key");
  if (key === null) {
    throw new WebSocketHandshakeError("Invalid Header: 'sec-websocket-key' header must be set");
  }
  if (!KEY.test(key.trim())) {
    throw new WebSocketHandshakeError(
      "Invalid Header: 'sec-websocket-key' header must be 16 bytes in base64",
    );
  }
  if (request.method !== "GET") {
    throw new WebSocketHandshakeError(`a WebSocket upgrade must be a GET, not ${request.method}`);
  }
  if (ticket === undefined || ticket.http10) {
    throw new WebSocketHandshakeError("a WebSocket upgrade needs HTTP/1.1");
  }
  if (headers.get("sec-websocket-version")?.trim() !== "13") {
    throw new WebSocketHandshakeError(
      "Invalid Header: 'sec-websocket-version' header must be 13",
      426,
    );
  }
  if (ticket.socket !== null) {
    throw new WebSocketHandshakeError("this request was upgraded already");
  }
  // A body would be read as frames once upgraded (Deno answers 400 too).
  const length = headers.get("content-length");
  if ((length !== null && Number(length) > 0) || headers.get("transfer-encoding") !== null) {
    throw new WebSocketHandshakeError("a WebSocket upgrade request must not carry a body");
  }
  const out = new Headers({
    upgrade: "websocket",
    connection: "Upgrade",
    "sec-websocket-accept": createHash("sha1").update(key.trim() + GUID).digest("base64"),
  });
  const protocol = options.protocol ?? "";
  if (protocol !== "") {
    const offered = (headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
    if (!offered.includes(protocol)) {
      throw new WebSocketHandshakeError(
        `Protocol '${protocol}' not in the request's protocol list (non negotiable)`,
      );
    }
    out.set("sec-websocket-protocol", protocol);
  }
  const idle = options.idleTimeout ?? 30;
  const socket = new ServerWebSocket(ticket.settings, protocol, idle > 0 ? idle : 0, request.url);
  // A Response cannot be made with status 101; this one says 101 all the same.
  const response = new Response(null, { status: 200, headers: out });
  Object.defineProperty(response, "status", { value: 101 });
  Object.defineProperty(response, "statusText", { value: "Switching Protocols" });
  Object.defineProperty(response, "ok", { value: false });
  ticket.socket = socket;
  ticket.response = response;
  return { socket: socket as unknown as WebSocket, response };
}

// ---------------------------------------------------------------------------
// Deno.upgradeWebSocket while a fetch server runs.

/** Deno's own function, as it was when this module loaded. */
const DENO_UPGRADE = Deno.upgradeWebSocket;
let denoDescriptor: PropertyDescriptor | undefined;
let holders = 0;

/**
 * A fetch server starts: `Deno.upgradeWebSocket` becomes `upgradeWebSocket`
 * (once for all servers of the process) until every holder released it.
 */
export function holdDenoUpgrade(): void {
  if (holders++ > 0) return;
  denoDescriptor = Object.getOwnPropertyDescriptor(Deno, "upgradeWebSocket");
  Object.defineProperty(Deno, "upgradeWebSocket", {
    value: upgradeWebSocket,
    writable: true,
    configurable: true,
    enumerable: denoDescriptor?.enumerable ?? true,
  });
}

/** A fetch server stopped: the last one puts Deno's function back. */
export function releaseDenoUpgrade(): void {
  if (holders === 0 || --holders > 0) return;
  if (denoDescriptor !== undefined) Object.defineProperty(Deno, "upgradeWebSocket", denoDescriptor);
}
