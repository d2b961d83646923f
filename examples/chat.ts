/**
 * A chat room over WebSocket, written for `deno serve` and run unchanged on
 * the reactor:
 *
 * ```sh
 * deno serve --port 8000 examples/chat.ts                       # Deno's server
 * deno task start --module examples/chat.ts --port 8000         # the reactor
 * ```
 *
 * Open http://127.0.0.1:8000/ in two browser tabs: each line typed in one
 * reaches every tab. `GET /` is the page; `GET /ws?name=NAME` upgrades to the
 * room, where each text message is broadcast as `NAME: text` and joins and
 * leaves are announced.
 *
 * @module
 */

const room = new Set<WebSocket>();

function broadcast(text: string): void {
  for (const s of room) if (s.readyState === WebSocket.OPEN) s.send(text);
}

const PAGE = `<!doctype html>
<meta charset="utf-8"><title>chat</title>
<ul id="log"></ul>
<form id="f"><input id="t" autocomplete="off" autofocus><button>send</button></form>
<script>
  const name = prompt("name?") || "anon";
  const ws = new WebSocket(location.origin.replace("http", "ws") + "/ws?name=" + encodeURIComponent(name));
  ws.onmessage = (e) => {
    const li = document.createElement("li");
    li.textContent = e.data;
    log.append(li);
  };
  f.onsubmit = (e) => { e.preventDefault(); ws.send(t.value); t.value = ""; };
</script>`;

export default {
  fetch(req: Request): Response {
    const url = new URL(req.url);
    if (url.pathname === "/ws") {
      const name = url.searchParams.get("name") || "anon";
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onopen = () => {
        room.add(socket);
        broadcast(`* ${name} joined (${room.size} here)`);
      };
      socket.onmessage = (e) => {
        if (typeof e.data === "string") broadcast(`${name}: ${e.data}`);
      };
      socket.onclose = () => {
        room.delete(socket);
        broadcast(`* ${name} left`);
      };
      return response;
    }
    if (url.pathname === "/") {
      return new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8" } });
    }
    return new Response("Not Found", { status: 404 });
  },
} satisfies Deno.ServeDefaultExport;
