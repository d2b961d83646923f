// Anchor server: Deno's built-in HTTP server (Deno.serve), answering every request with
// "Hello, World!". Listens on 127.0.0.1:$PORT (default 8080).
const port = Number(Deno.env.get("PORT") ?? "8080");
const body = "Hello, World!";

Deno.serve(
  { hostname: "127.0.0.1", port, onListen() {} },
  () => new Response(body),
);
