/**
 * The library as a user in another folder meets it: `mod.ts` imported by
 * path from a program outside this repository (no import map), a custom
 * protocol without `app`, the CLI's timeouts by default, and a protocol that
 * throws: logged once on stderr (the program configured no logging), that
 * connection closed, the server serving on.
 */

import assert from "node:assert/strict";

const MOD = new URL("../mod.ts", import.meta.url).pathname;

const PROGRAM = `
import { DEFAULT_TIMEOUTS, Server } from ${JSON.stringify(MOD)};
const server = await Server.start({
  protocol: () => ({
    data(conn, data, start, end) {
      const text = new TextDecoder().decode(data.subarray(start, end));
      if (text.startsWith("boom")) throw new Error("the protocol blew up on purpose");
      conn.write(data, start, end);
    },
  }),
});
const t = server.context.timeouts;
console.log(JSON.stringify({ port: server.port, timeouts: t, defaults: DEFAULT_TIMEOUTS }));
const reply = async (msg) => {
  const c = await Deno.connect({ port: server.port });
  await c.write(new TextEncoder().encode(msg));
  const buf = new Uint8Array(64);
  const n = await c.read(buf);
  c.close();
  return n === null ? null : new TextDecoder().decode(buf.subarray(0, n));
};
console.log(JSON.stringify({ echo: await reply("hello"), boom: await reply("boom"), after: await reply("again") }));
await server.stop();
`;

Deno.test("library: a program in another folder runs a custom protocol; a throwing protocol is logged once and closes only its connection", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/main.ts`, PROGRAM);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const [first, second] = stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.ok(first.port > 0);
    assert.deepEqual(first.timeouts, first.defaults, "library servers run with the CLI's timeouts");
    assert.deepEqual(second, { echo: "hello", boom: null, after: "again" });
    const lines = stderr.split("\n").filter((l) => l.includes("blew up on purpose"));
    assert.equal(lines.length, 1, `logged ${lines.length} times:\n${stderr}`);
    assert.match(lines[0], /ERR/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
