// Anchor server: Node's built-in HTTP server (node:http), answering every request with
// "Hello, World!". Listens on 127.0.0.1:$PORT (default 8080). Run with `node`.
import { createServer } from "node:http";

const port = Number(process.env.PORT ?? "8080");
const body = "Hello, World!";

createServer((_req, res) => {
  res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": String(body.length) });
  res.end(body);
}).listen(port, "127.0.0.1");
