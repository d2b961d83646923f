/**
 * The WebSocket echo app of bench/websocket.ts, as written for `deno serve`:
 * the same file runs under `deno serve` and `reactor serve --module`.
 *
 * @module
 */

export default {
  fetch(req: Request): Response {
    if (req.headers.get("upgrade") !== "websocket") return new Response("ws echo");
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  },
} satisfies Deno.ServeDefaultExport;
