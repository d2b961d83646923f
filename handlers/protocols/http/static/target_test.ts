import assert from "node:assert/strict";
import { TargetDecoder } from "./target.ts";

function decode(target: string): { status: number; path: string; dir: boolean; hidden: boolean } {
  const d = new TargetDecoder(64);
  const bytes = new Uint8Array([...target].map((c) => c.charCodeAt(0)));
  const status = d.decode(bytes, bytes.length);
  const path = String.fromCharCode(...d.path.subarray(0, d.length));
  if (status === 0) assert.equal(d.path[d.length], 0, "NUL-terminated");
  return { status, path, dir: d.trailingSlash, hidden: d.hidden };
}

Deno.test("TargetDecoder: paths are decoded, normalized and kept under the root", () => {
  const cases: [string, number, string?, boolean?][] = [
    ["/", 0, "", true],
    ["/index.html", 0, "index.html", false],
    ["/a/b/c.js?x=1#f", 0, "a/b/c.js", false],
    ["/a//b///c", 0, "a/b/c", false],
    ["/dir/", 0, "dir", true],
    ["/dir/.", 0, "dir", true],
    ["/a/./b", 0, "a/b", false],
    ["/a/../b", 0, "b", false],
    ["/a/b/..", 0, "a", true],
    ["/a%20b", 0, "a b", false],
    ["/a%2fb", 0, "a/b", false],
    ["/a%5cb", 0, "a\\b", false],
    ["http://example.com/x/y?q", 0, "x/y", false],
    ["http://example.com", 0, "", true],
    ["/..", 400],
    ["/../etc/passwd", 400],
    ["/a/../../etc/passwd", 400],
    ["/%2e%2e/etc/passwd", 400],
    ["/.%2e/etc/passwd", 400],
    ["/%2e./etc/passwd", 400],
    ["/..%2fetc%2fpasswd", 400],
    ["/a/..%2f..%2fetc", 400],
    ["/%2E%2E%2Fetc", 400],
    ["http://h/../x", 400],
    ["/a%00.html", 400],
    ["/a%zz", 400],
    ["/a%4", 400],
    ["*", 400],
  ];
  for (const [target, status, path, dir] of cases) {
    const r = decode(target);
    assert.equal(r.status, status, `${target}: status`);
    if (status === 0) {
      assert.equal(r.path, path, `${target}: path`);
      assert.equal(r.dir, dir, `${target}: directory`);
    }
  }
});

Deno.test("TargetDecoder: dot segments mark hidden paths, except a leading .well-known", () => {
  assert.equal(decode("/.env").hidden, true);
  assert.equal(decode("/.git/config").hidden, true);
  assert.equal(decode("/a/.hidden/b").hidden, true);
  assert.equal(decode("/%2egit/config").hidden, true);
  assert.equal(decode("/.well-known/acme").hidden, false);
  assert.equal(decode("/.well-knownx").hidden, true);
  assert.equal(decode("/a/.well-known").hidden, true);
  assert.equal(decode("/a.b/c").hidden, false);
  assert.equal(decode("/.git/../index.html").hidden, false, "judged on the resolved path");
});
