/**
 * The byte-matching router on its own: parameters, the wildcard, priority and
 * backtracking, 404/405/Allow, HEAD by GET, many routes (the hashed lookup),
 * absolute-form targets, the query ignored, and percent-encoded paths matched
 * (and passed on) undecoded.
 */
import assert from "node:assert/strict";
import { METHOD_GET, METHOD_OTHER } from "./http_parser.ts";
import { RouteMatch, Router } from "./router.ts";

const enc = new TextEncoder();

/** A router whose routes carry their own label. */
function router(...specs: [string, string][]): Router<string> {
  const r = new Router<string>();
  for (const [method, pattern] of specs) r.on(method, pattern, `${method} ${pattern}`);
  return r;
}

Deno.test("router: static paths, exactly (trailing slash included)", () => {
  const r = router(["GET", "/"], ["GET", "/users"], ["GET", "/users/"], ["GET", "/a/b/c"]);
  assert.equal(r.lookup("GET", "/").route?.handler, "GET /");
  assert.equal(r.lookup("GET", "/users").route?.handler, "GET /users");
  assert.equal(r.lookup("GET", "/users/").route?.handler, "GET /users/");
  assert.equal(r.lookup("GET", "/a/b/c").route?.handler, "GET /a/b/c");
  for (const miss of ["/a", "/a/b", "/a/b/c/", "/a/b/cd", "/user", "/usersx", "//", "/A/b/c"]) {
    assert.equal(r.lookup("GET", miss).status, 404, miss);
  }
});

Deno.test("router: parameters are whole non-empty segments, recorded in order", () => {
  const r = router(["GET", "/users/:id/posts/:post"], ["GET", "/files/:name"]);
  const m = r.lookup("GET", "/users/42/posts/hello-world");
  assert.equal(m.status, 200);
  assert.deepEqual(m.params, { id: "42", post: "hello-world" });
  assert.deepEqual(m.route?.paramNames, ["id", "post"]);
  assert.deepEqual(r.lookup("GET", "/files/a.tar.gz").params, { name: "a.tar.gz" });
  assert.equal(r.lookup("GET", "/users//posts/x").status, 404); // empty segment
  assert.equal(r.lookup("GET", "/files/").status, 404);
  assert.equal(r.lookup("GET", "/files/a/b").status, 404);
});

Deno.test("router: static beats parameter beats wildcard, with backtracking", () => {
  const r = router(
    ["GET", "/users/new"],
    ["GET", "/users/:id"],
    ["GET", "/users/:id/edit"],
    ["GET", "/users/new/x/y"],
    ["GET", "/users/*"],
  );
  assert.equal(r.lookup("GET", "/users/new").route?.handler, "GET /users/new");
  assert.equal(r.lookup("GET", "/users/7").route?.handler, "GET /users/:id");
  // "new" goes down the static branch first, which has no "/edit": back to :id.
  const edit = r.lookup("GET", "/users/new/edit");
  assert.equal(edit.route?.handler, "GET /users/:id/edit");
  assert.deepEqual(edit.params, { id: "new" });
  // Neither branch has /new/x: the wildcard takes the rest.
  const deep = r.lookup("GET", "/users/new/x");
  assert.equal(deep.route?.handler, "GET /users/*");
  assert.deepEqual(deep.params, { "*": "new/x" });
});

Deno.test("router: a trailing * takes the rest, slashes included, possibly empty", () => {
  const r = router(["GET", "/static/*"], ["GET", "/api/:v/*"]);
  assert.deepEqual(r.lookup("GET", "/static/a/b/c.css").params, { "*": "a/b/c.css" });
  assert.deepEqual(r.lookup("GET", "/static/").params, { "*": "" });
  assert.equal(r.lookup("GET", "/static").status, 404);
  const m = r.lookup("GET", "/api/v2/users/1?x=1");
  assert.deepEqual(m.params, { v: "v2", "*": "users/1" });
  assert.deepEqual(m.route?.paramNames, ["v", "*"]);
  const all = router(["GET", "/*"]);
  assert.deepEqual(all.lookup("GET", "/").params, { "*": "" });
  assert.deepEqual(all.lookup("GET", "/any/thing").params, { "*": "any/thing" });
});

Deno.test("router: 404 without a path, 405 with Allow for another method, HEAD by GET", () => {
  const r = router(["GET", "/items/:id"], ["DELETE", "/items/:id"], ["POST", "/items"]);
  assert.equal(r.lookup("GET", "/nothing").status, 404);
  const put = r.lookup("PUT", "/items/3");
  assert.equal(put.status, 405);
  assert.equal(put.allow, "GET, HEAD, DELETE");
  assert.equal(put.route, null);
  assert.equal(r.lookup("GET", "/items").status, 405);
  assert.equal(r.lookup("GET", "/items").allow, "POST");
  const head = r.lookup("HEAD", "/items/3");
  assert.equal(head.status, 200);
  assert.equal(head.route?.handler, "GET /items/:id");
  // An explicit HEAD route wins over GET's.
  r.head("/items/:id", "HEAD /items/:id");
  assert.equal(r.lookup("HEAD", "/items/3").route?.handler, "HEAD /items/:id");
  // Methods the parser has no code for, and `all`.
  r.on("PROPFIND", "/dav/:p", "PROPFIND /dav/:p");
  assert.equal(r.lookup("PROPFIND", "/dav/x").route?.handler, "PROPFIND /dav/:p");
  assert.equal(r.lookup("GET", "/dav/x").allow, "PROPFIND");
  r.all("/any", "ALL /any");
  assert.equal(r.lookup("PATCH", "/any").route?.handler, "ALL /any");
  assert.equal(r.lookup("BREW", "/any").route?.handler, "ALL /any");
});

Deno.test("router: 405 only if no other path takes the method", () => {
  // /users/:id has no POST, but the wildcard does.
  const r = router(["GET", "/users/:id"], ["POST", "/users/*"]);
  assert.equal(r.lookup("POST", "/users/5").route?.handler, "POST /users/*");
  assert.equal(r.lookup("PUT", "/users/5").status, 405);
  assert.equal(r.lookup("PUT", "/users/5").allow, "GET, HEAD"); // the first path that matched
});

Deno.test("router: many routes (hashed children) all found, none confused", () => {
  const r = new Router<number>();
  const n = 500;
  for (let k = 0; k < n; k++) {
    r.get(`/r${k}`, k);
    r.get(`/g/${k}/:x`, 1000 + k);
    r.post(`/g/${k}/:x`, 2000 + k);
  }
  for (let k = 0; k < n; k++) {
    assert.equal(r.lookup("GET", `/r${k}`).route?.handler, k);
    const m = r.lookup("GET", `/g/${k}/v${k}`);
    assert.equal(m.route?.handler, 1000 + k);
    assert.deepEqual(m.params, { x: `v${k}` });
    assert.equal(r.lookup("POST", `/g/${k}/y`).route?.handler, 2000 + k);
  }
  assert.equal(r.lookup("GET", `/r${n}`).status, 404);
  assert.equal(r.lookup("GET", "/g/x/1").status, 404);
  assert.equal(r.routes.length, 3 * n);
  assert.equal(r.routes[7].id, 7);
});

Deno.test("router: the query is ignored; absolute-form targets match on their path", () => {
  const r = router(["GET", "/"], ["GET", "/json"]);
  assert.equal(r.lookup("GET", "/json?x=1&y=/json/z").route?.handler, "GET /json");
  assert.equal(r.lookup("GET", "/?").route?.handler, "GET /");
  assert.equal(r.lookup("GET", "http://example.com/json").route?.handler, "GET /json");
  assert.equal(r.lookup("GET", "HTTPS://example.com:8443/json?q").route?.handler, "GET /json");
  assert.equal(r.lookup("GET", "http://example.com").route?.handler, "GET /");
  assert.equal(r.lookup("GET", "http://example.com?x").route?.handler, "GET /");
  assert.equal(r.lookup("OPTIONS", "*").status, 404);
  assert.equal(r.lookup("GET", "ftp://example.com/json").status, 404);
});

Deno.test("router: percent-encoded paths are matched and passed on undecoded", () => {
  const r = router(["GET", "/caf%C3%A9"], ["GET", "/files/:name"]);
  assert.equal(r.lookup("GET", "/caf%C3%A9").status, 200);
  // Bytes, not text: another spelling of the same text is another path.
  assert.equal(r.lookup("GET", "/caf%c3%a9").status, 404);
  assert.equal(r.lookup("GET", "/cafe").status, 404);
  // %2F is not a separator, and the parameter is the raw segment.
  assert.deepEqual(r.lookup("GET", "/files/a%2Fb%20c").params, { name: "a%2Fb%20c" });
  // Patterns are written as sent: non-ASCII text is refused with a hint.
  assert.throws(() => r.get("/café", "x"), /percent-encoded/);
  assert.equal(r.lookup("GET", encodeURI("/café")).status, 200);
});

Deno.test("router: match() on a buffer slice, reusing one RouteMatch (no allocation)", () => {
  const r = router(["GET", "/a/:b/c/:d"]);
  const buf = enc.encode("xxxx/a/one/c/two?q=1yyyy");
  const out = new RouteMatch<string>(0); // too small: grown once
  assert.equal(r.match(METHOD_GET, "GET", buf, 4, buf.length - 4, out), 200);
  assert.equal(out.paramCount, 2);
  const slice = (k: number) =>
    new TextDecoder().decode(buf.subarray(out.params[2 * k], out.params[2 * k + 1]));
  assert.equal(slice(0), "one");
  assert.equal(slice(1), "two");
  assert.equal(out.pathStart, 4);
  assert.equal(out.pathEnd, buf.indexOf(0x3f));
  const params = out.params;
  assert.equal(r.match(METHOD_GET, "GET", buf, 4, buf.length - 4, out), 200);
  assert.equal(out.params, params); // the same array the second time
  assert.equal(r.match(METHOD_OTHER, "BREW", buf, 4, buf.length - 4, out), 405);
  assert.equal(out.route, null);
});

Deno.test("router: malformed patterns and duplicates are refused", () => {
  const r = new Router<number>();
  r.get("/x/:id", 1);
  assert.throws(() => r.get("/x/:id", 2), /already routed/);
  assert.throws(() => r.get("/x/:other", 2), /already routed/); // the same path, renamed
  assert.throws(() => r.get("x", 1), /starts with "\/"/);
  assert.throws(() => r.get("/a/*/b", 1), /last segment/);
  assert.throws(() => r.get("/a/:", 1), /parameter name/);
  assert.throws(() => r.get("/a/:id/:id", 1), /twice/);
  assert.throws(() => r.get("/a?b", 1), /Invalid segment/);
  assert.throws(() => r.get("/a*", 1), /Invalid segment/);
  assert.throws(() => r.on("GE T", "/", 1), /Invalid method/);
  assert.equal(r.maxParams, 1);
});
