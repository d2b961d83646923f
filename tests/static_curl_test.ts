/**
 * `reactor serve --root DIR` with curl as a real client: ranges (`-r`, and
 * `-C -` resuming a download), conditional requests (`-z`, If-None-Match),
 * `--compressed` (br or gzip sidecars decoded by curl), HEAD (`-I`), and a
 * traversal sent as-is (`--path-as-is`). Skipped with a message when curl is
 * not installed.
 */

import assert from "node:assert/strict";
import { startCli } from "./support/net.ts";
import { APP_JS, equalBytes, makeStaticTree, TREE_MTIME_HTTP } from "./support/static_tree.ts";

const hasCurl = await new Deno.Command("curl", { args: ["--version"], stdout: "null" })
  .output()
  .then((o) => o.success, () => false);
if (!hasCurl) console.log("static_curl_test: curl is not installed; skipping");

/** What one curl run gave: exit code, status, response headers (lower-case) and body bytes. */
interface CurlResult {
  code: number;
  status: number;
  headers: Map<string, string>;
  body: Uint8Array;
  stderr: string;
}

/** Runs curl with `args` against `url`, the body to a file, the headers dumped. */
async function curl(url: string, ...args: string[]): Promise<CurlResult> {
  const dir = await Deno.makeTempDir({ prefix: "reactor-curl-" });
  try {
    const out = await new Deno.Command("curl", {
      args: [
        "-sS",
        "--max-time",
        "30",
        "-D",
        `${dir}/head`,
        "-o",
        `${dir}/body`,
        "-w",
        "%{http_code}",
        ...args,
        url,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    const head = await Deno.readTextFile(`${dir}/head`).catch(() => "");
    const headers = new Map<string, string>();
    // With -C - or redirects several heads may be dumped; keep the last.
    const last = head.trimEnd().split(/\r\n\r\n/).pop() ?? "";
    for (const line of last.split("\r\n").slice(1)) {
      const i = line.indexOf(":");
      if (i > 0) headers.set(line.slice(0, i).toLowerCase(), line.slice(i + 1).trim());
    }
    return {
      code: out.code,
      status: Number(dec.decode(out.stdout)),
      headers,
      body: await Deno.readFile(`${dir}/body`).catch(() => new Uint8Array(0)),
      stderr: dec.decode(out.stderr),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "static (curl): ranges, resume, conditional requests, --compressed, HEAD, --path-as-is",
  ignore: !hasCurl,
  async fn(t) {
    const tree = await makeStaticTree();
    const { cli, port } = await startCli(["--root", tree.root]);
    const base = `http://127.0.0.1:${port}`;
    const file = (p: string) => tree.files.get(p)!;
    try {
      await t.step("-r: a-b, a-, -n; 416 past the end", async () => {
        const small = file("/small.bin");
        for (
          const [range, a, b] of [
            ["0-99", 0, 99],
            ["4000-", 4000, 4095],
            ["-96", 4000, 4095],
            ["100-100", 100, 100],
          ] as [string, number, number][]
        ) {
          const r = await curl(`${base}/small.bin`, "-r", range);
          assert.equal(r.status, 206, `-r ${range}: ${r.stderr}`);
          assert.equal(r.headers.get("content-range"), `bytes ${a}-${b}/4096`);
          assert.ok(equalBytes(r.body, small.subarray(a, b + 1)), `-r ${range}: bytes differ`);
        }
        const past = await curl(`${base}/small.bin`, "-r", "5000-");
        assert.equal(past.status, 416);
        assert.equal(past.headers.get("content-range"), "bytes */4096");
        const big = file("/big.bin");
        const mid = await curl(`${base}/big.bin`, "-r", "123456-654321");
        assert.equal(mid.status, 206);
        assert.ok(equalBytes(mid.body, big.subarray(123456, 654322)), "1 MiB file: range bytes");
      });

      await t.step(
        "-C -: curl resumes a partial download of the 1 MiB file, byte-exact",
        async () => {
          const big = file("/big.bin");
          const dir = await Deno.makeTempDir({ prefix: "reactor-curl-" });
          try {
            await Deno.writeFile(`${dir}/big.bin`, big.subarray(0, 300_001));
            const out = await new Deno.Command("curl", {
              args: [
                "-sS",
                "--max-time",
                "30",
                "-C",
                "-",
                "-o",
                `${dir}/big.bin`,
                `${base}/big.bin`,
              ],
              stderr: "piped",
            }).output();
            assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
            const got = await Deno.readFile(`${dir}/big.bin`);
            console.log(`curl -C - resumed at 300001 and finished with ${got.length} bytes`);
            assert.ok(equalBytes(got, big), "the resumed file differs");
          } finally {
            await Deno.remove(dir, { recursive: true });
          }
        },
      );

      await t.step(
        "-z and If-None-Match: 304 when unchanged, 200 with the bytes when not",
        async () => {
          const same = await curl(`${base}/notes.txt`, "-z", TREE_MTIME_HTTP);
          assert.equal(same.status, 304);
          assert.equal(same.body.length, 0);
          const later = await curl(`${base}/notes.txt`, "-z", "Fri, 01 Jan 2100 00:00:00 GMT");
          assert.equal(later.status, 304);
          const older = await curl(`${base}/notes.txt`, "-z", "Wed, 01 Jan 2020 00:00:00 GMT");
          assert.equal(older.status, 200);
          assert.ok(equalBytes(older.body, file("/notes.txt")));
          const etag = older.headers.get("etag")!;
          const inm = await curl(`${base}/notes.txt`, "-H", `If-None-Match: ${etag}`);
          assert.equal(inm.status, 304);
          assert.equal(inm.headers.get("etag"), etag);
          const other = await curl(`${base}/notes.txt`, "-H", 'If-None-Match: "other"');
          assert.equal(other.status, 200);
          // A -z file: curl sends the file's mtime as If-Modified-Since.
          const dir = await Deno.makeTempDir({ prefix: "reactor-curl-" });
          try {
            await Deno.writeTextFile(`${dir}/ref`, "x");
            await Deno.utime(
              `${dir}/ref`,
              new Date("2024-01-02T03:04:05Z"),
              new Date("2024-01-02T03:04:05Z"),
            );
            assert.equal((await curl(`${base}/notes.txt`, "-z", `${dir}/ref`)).status, 304);
          } finally {
            await Deno.remove(dir, { recursive: true });
          }
          // If-Range with the ETag: the range; with another: the whole file.
          const ir = await curl(`${base}/small.bin`, "-r", "0-9", "-H", `If-Range: ${etag}`);
          assert.equal(ir.status, 200, "another file's ETag is not this one's");
          const own = (await curl(`${base}/small.bin`)).headers.get("etag")!;
          const ir2 = await curl(`${base}/small.bin`, "-r", "0-9", "-H", `If-Range: ${own}`);
          assert.equal(ir2.status, 206);
          assert.ok(equalBytes(ir2.body, file("/small.bin").subarray(0, 10)));
        },
      );

      await t.step("--compressed: the sidecar chosen and decoded by curl is app.js", async () => {
        const r = await curl(`${base}/app.js`, "--compressed");
        assert.equal(r.status, 200);
        const coding = r.headers.get("content-encoding");
        console.log(`curl --compressed got Content-Encoding: ${coding}`);
        assert.ok(coding === "br" || coding === "gzip", `Content-Encoding ${coding}`);
        assert.match(r.headers.get("vary") ?? "", /accept-encoding/i);
        assert.ok(equalBytes(r.body, APP_JS), "the decoded body is not app.js");
        const gz = await curl(`${base}/app.js`, "-H", "Accept-Encoding: gzip", "--compressed");
        assert.ok(equalBytes(gz.body, APP_JS));
        const plain = await curl(`${base}/app.js`);
        assert.equal(plain.headers.get("content-encoding"), undefined);
        assert.ok(equalBytes(plain.body, APP_JS));
      });

      await t.step(
        "-I: HEAD with the GET's headers; --path-as-is traversal is 400 and no secret",
        async () => {
          const h = await curl(`${base}/big.bin`, "-I");
          assert.equal(h.status, 200);
          assert.equal(h.headers.get("content-length"), String(1 << 20));
          assert.equal(h.headers.get("accept-ranges"), "bytes");
          // (curl -I writes the head itself to -o: no body check here; static_test has it.)
          for (const path of ["/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt"]) {
            const r = await curl(`${base}${path}`, "--path-as-is");
            assert.equal(r.status, 400, path);
            assert.ok(
              !new TextDecoder().decode(r.body).includes(tree.secretText),
              `${path} leaked`,
            );
          }
        },
      );
    } finally {
      assert.equal(await cli.stop(), 0, cli.stderr.slice(-2000));
      tree.remove();
    }
  },
});
