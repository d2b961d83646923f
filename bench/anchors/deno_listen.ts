// Anchor server: Deno's own async TCP sockets (Deno.listen). It does not parse HTTP: it
// counts request ends (CRLFCRLF) and answers each one with a fixed "Hello, World!" response,
// so pipelined HTTP/1.1 requests get one response each, in one write per read.
// Listens on 127.0.0.1:$PORT (default 8080).
const port = Number(Deno.env.get("PORT") ?? "8080");
const response = new TextEncoder().encode(
  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!",
);
const CR = 13;
const LF = 10;

/** Bytes of "\r\n\r\n" matched so far, given the previous match length and the next byte. */
function step(matched: number, byte: number): number {
  const want = matched % 2 === 0 ? CR : LF;
  if (byte === want) return matched + 1;
  return byte === CR ? 1 : 0;
}

async function serve(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const input = new Uint8Array(64 * 1024);
  let output = new Uint8Array(response.length * 64);
  let matched = 0; // carries a partial CRLFCRLF across reads
  try {
    for (;;) {
      const n = await conn.read(input);
      if (n === null) break;
      let requests = 0;
      for (let i = 0; i < n; i++) {
        matched = step(matched, input[i]);
        if (matched === 4) {
          requests++;
          matched = 0;
        }
      }
      if (requests === 0) continue;
      const size = requests * response.length;
      if (output.length < size) output = new Uint8Array(size * 2);
      for (let i = 0; i < requests; i++) output.set(response, i * response.length);
      for (let off = 0; off < size;) off += await conn.write(output.subarray(off, size));
    }
  } catch {
    // peer reset the connection
  }
  try {
    conn.close();
  } catch {
    // already closed
  }
}

for await (const conn of Deno.listen({ hostname: "127.0.0.1", port })) serve(conn);
