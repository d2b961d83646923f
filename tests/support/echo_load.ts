/**
 * A load generator in its own process: N connections, each sending 64 bytes
 * and waiting for them back, for a fixed time. Prints the round trips done.
 *
 *   deno run -A tests/support/echo_load.ts PORT CONNECTIONS MILLISECONDS
 */
const [port, conns, ms] = Deno.args.map(Number);
const msg = new Uint8Array(64).fill(120);
const end = performance.now() + ms;
let trips = 0;
await Promise.all(Array.from({ length: conns }, async () => {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const buf = new Uint8Array(64);
  while (performance.now() < end) {
    await conn.write(msg);
    let got = 0;
    while (got < 64) {
      const n = await conn.read(buf.subarray(got));
      if (n === null) throw new Error("server closed");
      got += n;
    }
    trips++;
  }
  conn.close();
}));
console.log(JSON.stringify({ trips }));
