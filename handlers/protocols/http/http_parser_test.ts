import assert from "node:assert/strict";
import {
  HttpParser,
  type HttpParserLimits,
  type HttpParserSink,
  METHOD_DELETE,
  METHOD_GET,
  METHOD_HEAD,
  METHOD_OPTIONS,
  METHOD_OTHER,
  METHOD_PATCH,
  METHOD_POST,
  METHOD_PUT,
} from "./http_parser.ts";

interface Seen {
  method: number;
  target: string;
  versionMinor: number;
  keepAlive: boolean;
  contentLength: number;
  chunked: boolean;
  bodyBytes: number;
}

/** Records what the parser reports; the test side may allocate freely. */
class Collector implements HttpParserSink {
  requests: Seen[] = [];
  errors: Array<[number, string]> = [];
  /** Return false from onRequest after this many requests (0: never). */
  stopAfter = 0;

  onRequest(p: HttpParser): boolean {
    let target = "";
    for (let k = 0; k < p.targetLength; k++) target += String.fromCharCode(p.target[k]);
    this.requests.push({
      method: p.method,
      target,
      versionMinor: p.versionMinor,
      keepAlive: p.keepAlive,
      contentLength: p.contentLength,
      chunked: p.chunked,
      bodyBytes: p.bodyBytes,
    });
    return this.requests.length !== this.stopAfter;
  }

  onError(status: number, reason: string): void {
    this.errors.push([status, reason]);
  }
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

const WRK = "GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

function parseWhole(input: Uint8Array, limits?: Partial<HttpParserLimits>): Collector {
  const sink = new Collector();
  const p = new HttpParser(sink, limits);
  const stopped = p.execute(input, 0, input.length);
  if (sink.errors.length === 0) assert.equal(stopped, input.length);
  return sink;
}

/** Feeds input in pieces cut at `cuts` (ascending), each piece as its own execute call. */
function parsePieces(
  input: Uint8Array,
  cuts: number[],
  limits?: Partial<HttpParserLimits>,
): Collector {
  const sink = new Collector();
  const p = new HttpParser(sink, limits);
  let from = 0;
  for (const to of [...cuts, input.length]) {
    // A copy, so the parser cannot be peeking at bytes of earlier or later pieces.
    const piece = input.slice(from, to);
    const stopped = p.execute(piece, 0, piece.length);
    if (sink.errors.length !== 0) break;
    assert.equal(stopped, piece.length);
    from = to;
  }
  return sink;
}

function parseBytewise(input: Uint8Array, limits?: Partial<HttpParserLimits>): Collector {
  const cuts: number[] = [];
  for (let k = 1; k < input.length; k++) cuts.push(k);
  return parsePieces(input, cuts, limits);
}

function errorOf(input: string, limits?: Partial<HttpParserLimits>): number {
  const sink = parseWhole(enc(input), limits);
  assert.equal(sink.errors.length, 1, `expected one error for ${JSON.stringify(input)}`);
  return sink.errors[0][0];
}

Deno.test("parses a wrk plaintext request", () => {
  const input = enc(WRK);
  const sink = new Collector();
  const p = new HttpParser(sink);
  assert.equal(p.idle, true);
  assert.equal(p.execute(input, 0, input.length), input.length);
  assert.deepEqual(sink.errors, []);
  assert.deepEqual(sink.requests, [{
    method: METHOD_GET,
    target: "/plaintext",
    versionMinor: 1,
    keepAlive: true,
    contentLength: -1,
    chunked: false,
    bodyBytes: 0,
  }]);
  assert.equal(p.idle, true);
});

Deno.test("parses 16 pipelined wrk requests in one read, honouring start and end", () => {
  const input = enc("xx" + WRK.repeat(16) + "yy");
  const sink = new Collector();
  const p = new HttpParser(sink);
  assert.equal(p.execute(input, 2, input.length - 2), input.length - 2);
  assert.equal(sink.requests.length, 16);
  assert.deepEqual(sink.errors, []);
  for (const r of sink.requests) assert.equal(r.target, "/plaintext");
});

Deno.test("parses a request with a Content-Length body", () => {
  const sink = parseWhole(
    enc(
      "POST /submit?x=1 HTTP/1.1\r\nHost: a\r\ncontent-LENGTH:  11 \r\nX-Other: v\r\n\r\n" +
        "hello world",
    ),
  );
  assert.deepEqual(sink.errors, []);
  assert.deepEqual(sink.requests, [{
    method: METHOD_POST,
    target: "/submit?x=1",
    versionMinor: 1,
    keepAlive: true,
    contentLength: 11,
    chunked: false,
    bodyBytes: 11,
  }]);
});

Deno.test("parses a chunked body with extensions and trailers", () => {
  const body = '5;name=val;q="a \\"b\\" c"\r\nhello\r\n' +
    "1A ; ext\r\n" + "x".repeat(26) + "\r\n" +
    "000;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\n";
  const sink = parseWhole(
    enc("PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n" + body),
  );
  assert.deepEqual(sink.errors, []);
  assert.deepEqual(sink.requests, [{
    method: METHOD_PUT,
    target: "/up",
    versionMinor: 1,
    keepAlive: true,
    contentLength: -1,
    chunked: true,
    bodyBytes: 31,
  }]);
});

Deno.test("maps methods to codes; methods are case-sensitive", () => {
  const cases: Array<[string, number]> = [
    ["GET", METHOD_GET],
    ["HEAD", METHOD_HEAD],
    ["POST", METHOD_POST],
    ["PUT", METHOD_PUT],
    ["DELETE", METHOD_DELETE],
    ["OPTIONS", METHOD_OPTIONS],
    ["PATCH", METHOD_PATCH],
    ["get", METHOD_OTHER],
    ["GE", METHOD_OTHER],
    ["GETS", METHOD_OTHER],
    ["PATCHES", METHOD_OTHER],
    ["OPTIONSX", METHOD_OTHER],
    ["DELETF", METHOD_OTHER],
    ["M-SEARCH", METHOD_OTHER],
    ["PROPFIND", METHOD_OTHER],
  ];
  for (const [name, code] of cases) {
    const sink = parseWhole(enc(`${name} / HTTP/1.1\r\nHost: h\r\n\r\n`));
    assert.deepEqual(sink.errors, [], name);
    assert.equal(sink.requests[0].method, code, name);
  }
});

Deno.test("copies origin-form, absolute-form and asterisk targets", () => {
  for (const t of ["/", "*", "http://example.com:80/a/b?c=d&e=%20#f", "/~!$&'()*+,;=:@[]"]) {
    const sink = parseWhole(enc(`OPTIONS ${t} HTTP/1.1\r\nHost: h\r\n\r\n`));
    assert.deepEqual(sink.errors, []);
    assert.equal(sink.requests[0].target, t);
  }
});

Deno.test("derives keepAlive from the version and Connection tokens", () => {
  const cases: Array<[string, string, boolean]> = [
    ["1.1", "", true],
    ["1.1", "Connection: close\r\n", false],
    ["1.1", "connection: Upgrade , CLOSE\r\n", false],
    ["1.1", "Connection: closed\r\n", true],
    ["1.1", "Connection: close x\r\n", true],
    ["1.1", "Connection: ,, keep-alive ,\r\n", true],
    ["1.1", "Connection: keep-alive\r\nConnection: close\r\n", false],
    ["1.0", "", false],
    ["1.0", "Connection: Keep-Alive\r\n", true],
    ["1.0", "Connection: keep-alivex\r\n", false],
    ["1.0", "Connection: keep-alive, close\r\n", false],
  ];
  for (const [version, header, keepAlive] of cases) {
    const sink = parseWhole(enc(`GET / HTTP/${version}\r\nHost: h\r\n${header}\r\n`));
    assert.deepEqual(sink.errors, [], header);
    assert.equal(sink.requests[0].versionMinor, version === "1.1" ? 1 : 0);
    assert.equal(sink.requests[0].keepAlive, keepAlive, `${version} ${header}`);
  }
});

Deno.test("accepts lenient-but-valid framing headers", () => {
  const ok: Array<[string, number, boolean]> = [
    ["Content-Length: 5\r\nContent-Length: 5\r\n", 5, false],
    ["Content-Length: 5, 5 ,5\r\n", 5, false],
    ["Content-Length: 0005\r\n", 5, false],
    ["CONTENT-LENGTH:\t5\t\r\n", 5, false],
    ["Transfer-Encoding: , chunked\r\n", 0, true],
    ["Transfer-Encoding:\r\nTransfer-Encoding: CHUNKED\r\n", 0, true],
  ];
  for (const [headers, bodyBytes, chunked] of ok) {
    const body = chunked ? "0\r\n\r\n" : "x".repeat(bodyBytes);
    const sink = parseWhole(enc(`POST / HTTP/1.1\r\nHost: h\r\n${headers}\r\n${body}`));
    assert.deepEqual(sink.errors, [], headers);
    assert.equal(sink.requests.length, 1);
    assert.equal(sink.requests[0].bodyBytes, bodyBytes);
    assert.equal(sink.requests[0].chunked, chunked);
  }
});

Deno.test("ignores up to 8 empty lines before a request line", () => {
  const sink = parseWhole(enc("\r\n".repeat(8) + WRK + "\r\n".repeat(8) + WRK));
  assert.deepEqual(sink.errors, []);
  assert.equal(sink.requests.length, 2);
});

/** Mixed pipelined batch: every kind of framing and keep-alive decision. */
const BATCH = "GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n" +
  "HEAD /h?q=1 HTTP/1.1\r\nhost: x\r\nConnection: upgrade\r\n\r\n" +
  'POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{"a":[1,2]}\n' +
  "\r\nPOST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
  '4;a="b"\r\nWiki\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n' +
  "GET /ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" +
  "DELETE /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

const BATCH_EXPECTED: Array<[number, string, number, boolean, number]> = [
  [METHOD_GET, "/plaintext", 1, true, 0],
  [METHOD_HEAD, "/h?q=1", 1, true, 0],
  [METHOD_POST, "/cl", 1, true, 12],
  [METHOD_POST, "/chunked", 1, true, 20],
  [METHOD_GET, "/ten", 0, true, 0],
  [METHOD_DELETE, "/bye", 1, false, 0],
];

const summary = (sink: Collector) =>
  sink.requests.map((r) => [r.method, r.target, r.versionMinor, r.keepAlive, r.bodyBytes]);

Deno.test("a pipelined batch parses to the expected sequence", () => {
  const sink = parseWhole(enc(BATCH));
  assert.deepEqual(sink.errors, []);
  assert.deepEqual(summary(sink), BATCH_EXPECTED);
});

Deno.test("every split point of a pipelined batch gives the same requests", () => {
  const input = enc(BATCH);
  const whole = summary(parseWhole(input));
  for (let i = 0; i <= input.length; i++) {
    const sink = parsePieces(input, [i]);
    assert.deepEqual(sink.errors, [], `split at ${i}`);
    assert.deepEqual(summary(sink), whole, `split at ${i}`);
  }
});

Deno.test("byte-by-byte and random multi-way feeding give the same requests", () => {
  const input = enc(BATCH);
  const whole = summary(parseWhole(input));
  assert.deepEqual(summary(parseBytewise(input)), whole);
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let round = 0; round < 200; round++) {
    const cuts = new Set<number>();
    const count = 1 + Math.floor(rand() * 12);
    for (let k = 0; k < count; k++) cuts.add(Math.floor(rand() * (input.length + 1)));
    const sorted = [...cuts].sort((a, b) => a - b);
    assert.deepEqual(summary(parsePieces(input, sorted)), whole, `cuts ${sorted}`);
  }
});

Deno.test("idle is true only between requests", () => {
  const sink = new Collector();
  const p = new HttpParser(sink);
  const input = enc("\r\nPOST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab");
  assert.equal(p.execute(input, 0, 2), 2);
  assert.equal(p.idle, true, "after an empty line");
  for (let k = 2; k < input.length - 1; k++) {
    p.execute(input, k, k + 1);
    assert.equal(p.idle, false, `after byte ${k}`);
  }
  p.execute(input, input.length - 1, input.length);
  assert.equal(sink.requests.length, 1);
  assert.equal(p.idle, true);
});

const HOST = "Host: h\r\n";
const BAD: Array<[string, string, number, Partial<HttpParserLimits>?]> = [
  ["bad method char", `GE(T / HTTP/1.1\r\n${HOST}\r\n`, 400],
  ["method with non-ASCII byte", `G\u00c9T / HTTP/1.1\r\n${HOST}\r\n`, 400],
  ["empty method", ` / HTTP/1.1\r\n${HOST}\r\n`, 400],
  ["two spaces after method", `GET  / HTTP/1.1\r\n${HOST}\r\n`, 400],
  ["two spaces after target", `GET /  HTTP/1.1\r\n${HOST}\r\n`, 400],
  ["tab as separator", `GET\t/ HTTP/1.1\r\n${HOST}\r\n`, 400],
  ["control byte in target", `GET /a\x01b HTTP/1.1\r\n${HOST}\r\n`, 400],
  ["DEL in target", `GET /a\x7fb HTTP/1.1\r\n${HOST}\r\n`, 400],
  ["missing version", `GET /\r\n${HOST}\r\n`, 400],
  ["missing target", `GET HTTP/1.1\r\n${HOST}\r\n`, 400],
  ["lower-case version", `GET / http/1.1\r\n${HOST}\r\n`, 400],
  ["two-digit minor", `GET / HTTP/1.10\r\n${HOST}\r\n`, 400],
  ["version without minor", `GET / HTTP/1\r\n${HOST}\r\n`, 400],
  ["trailing space after version", `GET / HTTP/1.1 \r\n${HOST}\r\n`, 400],
  ["HTTP/2.0", `GET / HTTP/2.0\r\n${HOST}\r\n`, 505],
  ["HTTP/0.9", `GET / HTTP/0.9\r\n${HOST}\r\n`, 505],
  ["bare LF after request line", `GET / HTTP/1.1\n${HOST}\r\n`, 400],
  ["bare LF after header", `GET / HTTP/1.1\r\nHost: h\n\r\n`, 400],
  ["bare LF as final line", `GET / HTTP/1.1\r\n${HOST}\n`, 400],
  ["CR not followed by LF", `GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n`, 400],
  ["NUL in header value", `GET / HTTP/1.1\r\n${HOST}X: a\x00b\r\n\r\n`, 400],
  ["NUL in header name", `GET / HTTP/1.1\r\n${HOST}X\x00: a\r\n\r\n`, 400],
  ["NUL before request", `\x00GET / HTTP/1.1\r\n${HOST}\r\n`, 400],
  ["control byte in value", `GET / HTTP/1.1\r\n${HOST}X: a\x1bb\r\n\r\n`, 400],
  ["obs-fold", `GET / HTTP/1.1\r\n${HOST}X: a\r\n b\r\n\r\n`, 400],
  ["obs-fold with tab", `GET / HTTP/1.1\r\n${HOST}X: a\r\n\tb\r\n\r\n`, 400],
  ["space before colon", `GET / HTTP/1.1\r\nHost : h\r\n\r\n`, 400],
  ["empty header name", `GET / HTTP/1.1\r\n${HOST}: v\r\n\r\n`, 400],
  ["header without colon", `GET / HTTP/1.1\r\n${HOST}NoColon\r\n\r\n`, 400],
  ["missing Host in 1.1", `GET / HTTP/1.1\r\nX: y\r\n\r\n`, 400],
  ["two Hosts", `GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n`, 400],
  ["CL non-digit", `POST / HTTP/1.1\r\n${HOST}Content-Length: 1x\r\n\r\n`, 400],
  ["CL negative", `POST / HTTP/1.1\r\n${HOST}Content-Length: -1\r\n\r\n`, 400],
  ["CL hex", `POST / HTTP/1.1\r\n${HOST}Content-Length: 0x10\r\n\r\n`, 400],
  ["CL empty", `POST / HTTP/1.1\r\n${HOST}Content-Length: \r\n\r\n`, 400],
  ["CL two numbers", `POST / HTTP/1.1\r\n${HOST}Content-Length: 1 2\r\n\r\n`, 400],
  ["CL trailing comma", `POST / HTTP/1.1\r\n${HOST}Content-Length: 1,\r\n\r\n`, 400],
  [
    "CL conflicting headers",
    `POST / HTTP/1.1\r\n${HOST}Content-Length: 1\r\nContent-Length: 2\r\n\r\n`,
    400,
  ],
  ["CL conflicting list", `POST / HTTP/1.1\r\n${HOST}Content-Length: 3, 30\r\n\r\n`, 400],
  [
    "CL + TE",
    `POST / HTTP/1.1\r\n${HOST}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n`,
    400,
  ],
  [
    "TE + CL",
    `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n`,
    400,
  ],
  ["TE gzip", `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: gzip\r\n\r\n`, 501],
  ["TE gzip, chunked", `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: gzip, chunked\r\n\r\n`, 501],
  ["TE chunked, gzip", `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked, gzip\r\n\r\n`, 501],
  ["TE chunkedx", `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunkedx\r\n\r\n`, 501],
  [
    "TE chunked twice",
    `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked, chunked\r\n\r\n`,
    400,
  ],
  ["TE empty", `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: \r\n\r\n`, 400],
  ["TE in 1.0", `POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n`, 400],
  ["CL > maxBody", `POST / HTTP/1.1\r\n${HOST}Content-Length: 101\r\n\r\n`, 413, { maxBody: 100 }],
  ["CL of 40 digits", `POST / HTTP/1.1\r\n${HOST}Content-Length: ${"9".repeat(40)}\r\n\r\n`, 413],
  [
    "chunked total > maxBody",
    `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n40\r\n${"x".repeat(64)}\r\n25\r\n`,
    413,
    { maxBody: 100 },
  ],
  [
    "chunk size of 40 hex digits",
    `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n${"f".repeat(40)}\r\n`,
    413,
  ],
  ["bad chunk size", `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\nz\r\n`, 400],
  [
    "negative chunk size",
    `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n-1\r\n`,
    400,
  ],
  ["empty chunk size", `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n\r\n`, 400],
  [
    "chunk size then space",
    `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n1 \r\n`,
    400,
  ],
  ["chunk bare LF", `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n1\nx\r\n`, 400],
  [
    "chunk data too long",
    `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n`,
    400,
  ],
  ["bad chunk ext", `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n1;a=b c\r\n`, 400],
  [
    "chunk ext NUL",
    `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n1;a="\x00"\r\n`,
    400,
  ],
  [
    "chunk ext too long",
    `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n1;${"a".repeat(300)}\r\n`,
    413,
    { maxHeaderBytes: 256 },
  ],
  [
    "trailer obs-fold",
    `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n0\r\nA: b\r\n c\r\n\r\n`,
    400,
  ],
  [
    "trailer section too large",
    `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n0\r\nA: ${
      "b".repeat(300)
    }\r\n\r\n`,
    431,
    { maxHeaderBytes: 256 },
  ],
  ["header section too large", `GET / HTTP/1.1\r\n${HOST}X: ${"v".repeat(300)}\r\n\r\n`, 431, {
    maxHeaderBytes: 256,
  }],
  ["target too large", `GET /${"a".repeat(300)} HTTP/1.1\r\n${HOST}\r\n`, 414, {
    maxHeaderBytes: 256,
  }],
  ["too many empty lines", "\r\n".repeat(9) + `GET / HTTP/1.1\r\n${HOST}\r\n`, 400],
  ["bare LF before request", `\nGET / HTTP/1.1\r\n${HOST}\r\n`, 400],
];

Deno.test("rejects each bad input with its status", () => {
  for (const [name, input, status, limits] of BAD) {
    const sink = parseWhole(enc(input), limits);
    assert.equal(sink.errors.length, 1, name);
    assert.equal(sink.errors[0][0], status, name);
    assert.equal(typeof sink.errors[0][1], "string");
    assert.notEqual(sink.errors[0][1], "");
    assert.deepEqual(sink.requests, [], name);
  }
});

Deno.test("bad inputs get the same status at every split point and byte by byte", () => {
  for (const [name, text, status, limits] of BAD) {
    const input = enc(text);
    for (let i = 0; i <= input.length; i++) {
      const sink = parsePieces(input, [i], limits);
      assert.deepEqual(sink.errors.map((e) => e[0]), [status], `${name} split at ${i}`);
    }
    assert.deepEqual(parseBytewise(input, limits).errors.map((e) => e[0]), [status], name);
  }
});

Deno.test("an exactly full header section is accepted, one more byte is 431", () => {
  const head = `GET / HTTP/1.1\r\n${HOST}X: `;
  const limit = 128;
  const fill = limit - head.length - 4; // "\r\n\r\n"
  assert.deepEqual(
    parseWhole(enc(head + "v".repeat(fill) + "\r\n\r\n"), {
      maxHeaderBytes: limit,
    }).errors,
    [],
  );
  assert.equal(errorOf(head + "v".repeat(fill + 1) + "\r\n\r\n", { maxHeaderBytes: limit }), 431);
  // The budget is per request, not per connection.
  const ok = head + "v".repeat(fill) + "\r\n\r\n";
  const sink = parseWhole(enc(ok.repeat(5)), { maxHeaderBytes: limit });
  assert.deepEqual(sink.errors, []);
  assert.equal(sink.requests.length, 5);
});

Deno.test("431 is reported as soon as the limit is crossed, even in small pieces", () => {
  const limit = 1024;
  const sink = new Collector();
  const p = new HttpParser(sink, { maxHeaderBytes: limit });
  const line = enc("X-Filler: 0123456789abcdef\r\n"); // a head that never ends
  const first = enc(`GET / HTTP/1.1\r\n${HOST}`);
  let fed = p.execute(first, 0, first.length);
  let erroredAt = -1;
  for (let round = 0; round < 1000 && erroredAt < 0; round++) {
    for (let k = 0; k < line.length; k++) {
      const stopped = p.execute(line, k, k + 1);
      if (sink.errors.length !== 0) {
        assert.equal(stopped, k, "returns the index of the offending byte");
        erroredAt = fed;
        break;
      }
      fed++;
    }
  }
  assert.deepEqual(sink.errors.map((e) => e[0]), [431]);
  assert.equal(erroredAt, limit, "the error comes with byte number limit + 1");
});

Deno.test("413 for Content-Length is reported before any body byte arrives", () => {
  const sink = new Collector();
  const p = new HttpParser(sink, { maxBody: 10 });
  const head = enc(`POST / HTTP/1.1\r\n${HOST}Content-Length: 11\r\n\r\n`);
  p.execute(head, 0, head.length);
  assert.deepEqual(sink.errors.map((e) => e[0]), [413]);
  const head2 = enc(`POST / HTTP/1.1\r\n${HOST}Content-Length: 10\r\n\r\n`);
  const ok = parseWhole(new Uint8Array([...head2, ...enc("0123456789")]), { maxBody: 10 });
  assert.deepEqual(ok.errors, []);
  assert.equal(ok.requests[0].bodyBytes, 10);
});

Deno.test("onRequest returning false stops right after that request", () => {
  const reqs = [WRK, "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", WRK];
  const input = enc(reqs.join(""));
  const sink = new Collector();
  sink.stopAfter = 2;
  const p = new HttpParser(sink);
  const stopped = p.execute(input, 0, input.length);
  assert.equal(stopped, reqs[0].length + reqs[1].length);
  assert.equal(sink.requests.length, 2);
  assert.equal(sink.requests[1].bodyBytes, 3);
  assert.equal(p.idle, true);
  // Stopping is not an error: the caller may resume with the rest of the buffer.
  assert.equal(p.execute(input, stopped, input.length), input.length);
  assert.equal(sink.requests.length, 3);
  assert.deepEqual(sink.errors, []);
});

Deno.test("onRequest returning false on a request without body or chunked body", () => {
  for (
    const first of [
      WRK,
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    ]
  ) {
    const input = enc(first + WRK);
    const sink = new Collector();
    sink.stopAfter = 1;
    const p = new HttpParser(sink);
    assert.equal(p.execute(input, 0, input.length), first.length);
    assert.equal(sink.requests.length, 1);
  }
});

Deno.test("a dead parser ignores input until reset()", () => {
  const sink = new Collector();
  const p = new HttpParser(sink);
  const bad = enc("BAD\x00");
  assert.equal(p.execute(bad, 0, bad.length), 3);
  assert.equal(sink.errors.length, 1);
  assert.equal(p.idle, false);
  const good = enc(WRK);
  assert.equal(p.execute(good, 0, good.length), 0);
  assert.equal(sink.errors.length, 1);
  assert.equal(sink.requests.length, 0);
  p.reset();
  assert.equal(p.idle, true);
  assert.equal(p.execute(good, 0, good.length), good.length);
  assert.equal(sink.requests.length, 1);
});

Deno.test("reset() discards a partial request", () => {
  const sink = new Collector();
  const p = new HttpParser(sink, { maxHeaderBytes: 64 });
  const partial = enc("POST /partial HTTP/1.1\r\nHost: h\r\nX: " + "y".repeat(20));
  p.execute(partial, 0, partial.length);
  assert.equal(p.idle, false);
  p.reset();
  const good = enc(WRK);
  assert.equal(p.execute(good, 0, good.length), good.length);
  assert.deepEqual(sink.errors, []);
  assert.equal(sink.requests[0].target, "/plaintext");
});

Deno.test("rejects unusable limits", () => {
  const sink = new Collector();
  assert.throws(() => new HttpParser(sink, { maxHeaderBytes: 0 }), RangeError);
  assert.throws(() => new HttpParser(sink, { maxHeaderBytes: 1.5 }), RangeError);
  assert.throws(() => new HttpParser(sink, { maxBody: -1 }), RangeError);
  assert.throws(() => new HttpParser(sink, { maxBody: 2 ** 60 }), RangeError);
  assert.equal(new HttpParser(sink, { maxHeaderBytes: 100 }).target.length, 100);
});

Deno.test("parsing pipelined requests does not allocate in the steady state", () => {
  const pipelined = enc(WRK.repeat(16));
  const mixed = enc(BATCH);
  let count = 0;
  const sink: HttpParserSink = {
    onRequest: (p) => {
      count += p.targetLength;
      return true;
    },
    onError: () => {
      throw new Error("unexpected parse error");
    },
  };
  const p = new HttpParser(sink);
  const run = (rounds: number) => {
    for (let r = 0; r < rounds; r++) {
      p.execute(pipelined, 0, pipelined.length);
      // Split feeding exercises the cross-call paths too.
      p.execute(mixed, 0, 100);
      p.execute(mixed, 100, mixed.length);
    }
  };
  run(20000); // warm-up: let the JIT settle
  // 100 rounds of 50 * (16 + 6) requests. A single 16-byte allocation per request would add
  // over 17 KB per round; rounds are kept small so that most of them see no GC even then, and
  // the median shrugs off the rounds that do.
  const deltas: number[] = [];
  for (let k = 0; k < 100; k++) {
    const before = Deno.memoryUsage().heapUsed;
    run(50);
    deltas.push(Deno.memoryUsage().heapUsed - before);
  }
  deltas.sort((a, b) => a - b);
  assert.ok(count > 0);
  assert.ok(deltas[50] < 4096, `median heap growth per round: ${deltas[50]} bytes`);
});

// ---- App mode (captureHeaders, onHead, onBody) ----

const latin1 = (b: Uint8Array, from: number, to: number): string => {
  let s = "";
  for (let k = from; k < to; k++) s += String.fromCharCode(b[k]);
  return s;
};

/** The captured fields as [name, value] pairs. */
function fieldsOf(p: HttpParser): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let k = 0; k < p.fieldCount; k++) {
    const f = p.fields;
    out.push([
      latin1(p.headBytes, f[4 * k], f[4 * k + 1]),
      latin1(p.headBytes, f[4 * k + 2], f[4 * k + 3]),
    ]);
  }
  return out;
}

interface AppSeen {
  method: string;
  code: number;
  target: string;
  versionMinor: number;
  keepAlive: boolean;
  contentLength: number;
  chunked: boolean;
  expectContinue: boolean;
  fields: Array<[string, string]>;
  body: string;
}

/** Records what an app-mode parser delivers, and checks the order of the calls. */
class AppCollector implements HttpParserSink {
  requests: AppSeen[] = [];
  errors: Array<[number, string]> = [];
  /** Calls in order: "head", "body", "request" (consecutive bodies merged). */
  calls: string[] = [];
  /** onHead's answer for the nth head (0-based); true when absent. */
  headAnswers: boolean[] = [];
  current: AppSeen | null = null;
  heads = 0;

  onHead(p: HttpParser): boolean {
    assert.equal(this.current, null, "a head while a request is open");
    assert.equal(p.bodyBytes, 0, "no body byte before onHead");
    assert.equal(p.idle, false);
    this.current = {
      method: p.methodString(),
      code: p.method,
      target: latin1(p.target, 0, p.targetLength),
      versionMinor: p.versionMinor,
      keepAlive: p.keepAlive,
      contentLength: p.contentLength,
      chunked: p.chunked,
      expectContinue: p.expectContinue,
      fields: fieldsOf(p),
      body: "",
    };
    this.calls.push("head");
    return this.headAnswers[this.heads++] ?? true;
  }

  onBody(data: Uint8Array, start: number, end: number): void {
    assert.notEqual(this.current, null, "body before head");
    assert.ok(end > start, "an empty body piece");
    this.current!.body += latin1(data, start, end);
    if (this.calls[this.calls.length - 1] !== "body") this.calls.push("body");
  }

  onRequest(p: HttpParser): boolean {
    const cur = this.current;
    assert.notEqual(cur, null, "onRequest without onHead");
    // The captured head is still valid here.
    assert.deepEqual(fieldsOf(p), cur!.fields, "fields changed between onHead and onRequest");
    assert.equal(p.methodString(), cur!.method);
    assert.equal(p.bodyBytes, cur!.body.length);
    this.requests.push(cur!);
    this.current = null;
    this.calls.push("request");
    return true;
  }

  onError(status: number, reason: string): void {
    this.errors.push([status, reason]);
  }
}

const APP: Partial<HttpParserLimits> = { captureHeaders: true };

/** Feeds input to an app-mode parser in pieces cut at `cuts`, resuming after every stop. */
function appPieces(
  input: Uint8Array,
  cuts: number[],
  limits: Partial<HttpParserLimits> = APP,
  sink: AppCollector = new AppCollector(),
): AppCollector {
  const p = new HttpParser(sink, limits);
  let from = 0;
  for (const to of [...cuts, input.length]) {
    const piece = input.slice(from, to);
    let i = 0;
    do {
      // An empty range too: a head stopped by onHead with no body completes on it.
      i = p.execute(piece, i, piece.length);
      if (sink.errors.length !== 0) return sink;
    } while (i < piece.length);
    from = to;
  }
  p.execute(input, input.length, input.length);
  return sink;
}

const appWhole = (input: Uint8Array, limits: Partial<HttpParserLimits> = APP) =>
  appPieces(input, [], limits);

function everySplit(input: Uint8Array, check: (sink: AppCollector, at: string) => void): void {
  for (let i = 0; i <= input.length; i++) check(appPieces(input, [i]), `split at ${i}`);
  const bytewise: number[] = [];
  for (let k = 1; k < input.length; k++) bytewise.push(k);
  check(appPieces(input, bytewise), "byte by byte");
}

const FIELDS_REQUEST = "PROPFIND /dav/x?y=1 HTTP/1.1\r\n" +
  "Host: example.com\r\n" +
  "User-Agent:  curl/8.0 \r\n" +
  "Accept:\t*/*\t\r\n" +
  "X-Empty:\r\n" +
  "X-Spaces:   \r\n" +
  "X-Inner: a  b\t c\r\n" +
  "Set-Cookie: a=1; Path=/\r\n" +
  "set-cookie: b=2\r\n" +
  "Connection: keep-alive, Upgrade\r\n" +
  "Content-Length: 5\r\n" +
  "X-Obs-Text: caf\xe9\r\n" +
  "\r\nhello";

const FIELDS_EXPECTED: Array<[string, string]> = [
  ["Host", "example.com"],
  ["User-Agent", "curl/8.0"],
  ["Accept", "*/*"],
  ["X-Empty", ""],
  ["X-Spaces", ""],
  ["X-Inner", "a  b\t c"],
  ["Set-Cookie", "a=1; Path=/"],
  ["set-cookie", "b=2"],
  ["Connection", "keep-alive, Upgrade"],
  ["Content-Length", "5"],
  ["X-Obs-Text", "caf\xe9"],
];

/** Latin-1 bytes of a string whose chars are all below 256. */
const bytesOf = (s: string): Uint8Array => Uint8Array.from(s, (ch) => ch.charCodeAt(0));

Deno.test("app mode: every field in order, names as sent, values trimmed, repeats kept apart", () => {
  const input = bytesOf(FIELDS_REQUEST);
  everySplit(input, (sink, at) => {
    assert.deepEqual(sink.errors, [], at);
    assert.deepEqual(sink.calls, ["head", "body", "request"], at);
    assert.equal(sink.requests.length, 1, at);
    const r = sink.requests[0];
    assert.deepEqual(r.fields, FIELDS_EXPECTED, at);
    assert.equal(r.method, "PROPFIND", at);
    assert.equal(r.code, METHOD_OTHER, at);
    assert.equal(r.target, "/dav/x?y=1", at);
    assert.equal(r.contentLength, 5, at);
    assert.equal(r.body, "hello", at);
  });
});

Deno.test("app mode: headBytes starts with the method, fields point into it, offsets ordered", () => {
  const input = bytesOf(FIELDS_REQUEST);
  let checked = false;
  const sink: HttpParserSink = {
    onHead(p) {
      assert.equal(p.methodLength, 8);
      assert.equal(p.methodBytes, p.headBytes);
      assert.equal(latin1(p.methodBytes, 0, p.methodLength), "PROPFIND");
      assert.ok(p.headBytes.length <= 16384);
      let prev = 0;
      for (let k = 0; k < 4 * p.fieldCount; k++) {
        assert.ok(p.fields[k] >= prev, `offset ${k} goes back`);
        prev = p.fields[k];
      }
      checked = true;
      return true;
    },
    onRequest: () => true,
    onError: (status, reason) => assert.fail(`${status} ${reason}`),
  };
  const p = new HttpParser(sink, APP);
  assert.equal(p.execute(input, 0, input.length), input.length);
  assert.ok(checked);
});

Deno.test("app mode: 1,000 header fields, buffers grown within maxHeaderBytes, at many split points", () => {
  let head = "GET /many HTTP/1.1\r\nHost: h\r\n";
  const expected: Array<[string, string]> = [["Host", "h"]];
  for (let k = 0; k < 1000; k++) {
    head += `X-Field-${k}: value ${k}\r\n`;
    expected.push([`X-Field-${k}`, `value ${k}`]);
  }
  const input = enc(head + "\r\n");
  const limits = { captureHeaders: true, maxHeaderBytes: input.length };
  for (const cut of [0, 1, 17, 5000, 12345, input.length - 3, input.length - 1]) {
    const sink = appPieces(input, [cut], limits);
    assert.deepEqual(sink.errors, [], `cut ${cut}`);
    assert.deepEqual(sink.requests[0].fields, expected, `cut ${cut}`);
  }
  // Exactly full is fine; one byte more is still 431 in app mode.
  const over = enc(head + "X: 1\r\n\r\n");
  assert.deepEqual(appWhole(over, limits).errors.map((e) => e[0]), [431]);
  // The smallest field line (4 bytes, "a:" CRLF) many times over.
  const tiny = enc("GET / HTTP/1.1\r\nHost: h\r\n" + "a:\r\n".repeat(3000) + "\r\n");
  const sink = appWhole(tiny, { captureHeaders: true });
  assert.deepEqual(sink.errors, []);
  assert.equal(sink.requests[0].fields.length, 3001);
  assert.deepEqual(sink.requests[0].fields[3000], ["a", ""]);
});

Deno.test("app mode: a chunked body arrives decoded (extensions, trailers and framing removed)", () => {
  const body = '5;name=val;q="a \\"b\\" c"\r\nhello\r\n' +
    "1A ; ext\r\n" + "abcdefghijklmnopqrstuvwxyz\r\n" +
    "4\r\n\r\n\r\n\r\n" + // data that looks like framing
    "000;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\n";
  const input = enc(
    "PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-After: 1\r\n\r\n" + body,
  );
  everySplit(input, (sink, at) => {
    assert.deepEqual(sink.errors, [], at);
    assert.deepEqual(sink.calls, ["head", "body", "request"], at);
    const r = sink.requests[0];
    assert.equal(r.body, "helloabcdefghijklmnopqrstuvwxyz\r\n\r\n", at);
    assert.equal(r.chunked, true, at);
    assert.equal(r.method, "PUT", at);
    // Trailer fields are not recorded; the head's are intact at onRequest (checked by the sink).
    assert.deepEqual(r.fields, [["Host", "h"], ["Transfer-Encoding", "chunked"], ["X-After", "1"]]);
  });
});

Deno.test("app mode: pipelined requests with bodies, at every split point", () => {
  const input = enc(BATCH);
  const bodies = ["", "", '{"a":[1,2]}\n', "Wiki0123456789abcdef", "", ""];
  const methods = ["GET", "HEAD", "POST", "POST", "GET", "DELETE"];
  everySplit(input, (sink, at) => {
    assert.deepEqual(sink.errors, [], at);
    assert.deepEqual(sink.requests.map((r) => r.body), bodies, at);
    assert.deepEqual(sink.requests.map((r) => r.method), methods, at);
    assert.deepEqual(sink.requests[1].fields, [["host", "x"], ["Connection", "upgrade"]], at);
    assert.deepEqual(sink.requests[4].fields, [["Connection", "keep-alive"]], at);
    assert.deepEqual(sink.requests[5].fields, [
      ["Host", "x"],
      ["Connection", "close"],
      ["Content-Length", "0"],
    ], at);
  });
});

Deno.test("onHead returning false: execute stops after the head, a later execute goes on with the body", () => {
  const post = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
  const get = "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
  const chunkedHead = "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  const input = enc(post + "abc" + get + chunkedHead + "2\r\nxy\r\n0\r\n\r\n");
  const sink = new AppCollector();
  sink.headAnswers = [false, false, false];
  const p = new HttpParser(sink, APP);
  // POST: stops just after its head; nothing of the body is taken.
  let i = p.execute(input, 0, input.length);
  assert.equal(i, post.length);
  assert.deepEqual(sink.calls, ["head"]);
  assert.equal(p.idle, false);
  assert.equal(p.bodyBytes, 0);
  // Going on: the body, the request, then the GET's head stops it again.
  i = p.execute(input, i, input.length);
  assert.equal(i, post.length + 3 + get.length);
  assert.deepEqual(sink.calls, ["head", "body", "request", "head"]);
  // The GET has no body: it is complete, but onRequest waits for the next execute,
  // even one with nothing to read.
  assert.equal(p.idle, false);
  assert.equal(p.execute(input, i, i), i);
  assert.deepEqual(sink.calls, ["head", "body", "request", "head", "request"]);
  assert.equal(p.idle, true);
  i = p.execute(input, i, input.length);
  assert.equal(i, post.length + 3 + get.length + chunkedHead.length);
  assert.equal(p.execute(input, i, input.length), input.length);
  assert.deepEqual(sink.requests.map((r) => r.body), ["abc", "", "xy"]);
  assert.equal(p.idle, true);
  assert.deepEqual(sink.errors, []);
});

Deno.test("onHead returning false every time gives the same requests at every split point", () => {
  const input = enc(BATCH);
  const whole = appWhole(input);
  for (let cut = 0; cut <= input.length; cut++) {
    const sink = new AppCollector();
    sink.headAnswers = new Array(6).fill(false);
    appPieces(input, [cut], APP, sink);
    assert.deepEqual(sink.errors, [], `cut ${cut}`);
    assert.deepEqual(sink.requests, whole.requests, `cut ${cut}`);
  }
});

Deno.test("onHead and onBody work without captureHeaders (no fields kept)", () => {
  const input = enc(BATCH);
  const sink = appWhole(input, {});
  assert.deepEqual(sink.errors, []);
  assert.deepEqual(sink.requests.map((r) => r.body), [
    "",
    "",
    '{"a":[1,2]}\n',
    "Wiki0123456789abcdef",
    "",
    "",
  ]);
  for (const r of sink.requests) assert.deepEqual(r.fields, []);
  const p = new HttpParser(new Collector());
  assert.equal(p.headBytes.length, 0);
  assert.equal(p.fieldCount, 0);
});

Deno.test("methodString: any token in app mode; without it, up to 7 bytes for unknown methods", () => {
  const names = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "OPTIONS",
    "PATCH",
    "BREW",
    "M",
    "get",
    "PURGE",
    "CONNECT",
    "PROPFIND",
    "M-SEARCH",
    "VERY-LONG-METHOD-NAME!#$%&'*+.^_`|~",
  ];
  for (const name of names) {
    const input = enc(`${name} / HTTP/1.1\r\nHost: h\r\n\r\n`);
    for (const capture of [true, false]) {
      let seen = "?";
      const sink: HttpParserSink = {
        onRequest: (p) => {
          seen = p.methodString();
          return true;
        },
        onError: (status, reason) => assert.fail(`${name}: ${status} ${reason}`),
      };
      new HttpParser(sink, { captureHeaders: capture }).execute(input, 0, input.length);
      assert.equal(seen, capture || name.length <= 7 ? name : "", `${name} capture=${capture}`);
    }
  }
});

Deno.test("expectContinue: 100-continue as a list member, any case, HTTP/1.1 only, per request", () => {
  const cases: Array<[string, string, boolean]> = [
    ["1.1", "Expect: 100-continue\r\n", true],
    ["1.1", "expect: 100-Continue\r\n", true],
    ["1.1", "EXPECT:  foo=bar , 100-CONTINUE \r\n", true],
    ["1.1", "Expect: 100-continuex\r\n", false],
    ["1.1", "Expect: 100\r\n", false],
    ["1.1", "Expect: 100 continue\r\n", false],
    ["1.1", "Expectation: 100-continue\r\n", false],
    ["1.1", "X-Expect: 100-continue\r\n", false],
    ["1.1", "", false],
    ["1.0", "Expect: 100-continue\r\n", false], // RFC 9110 §10.1.1: ignored in 1.0
  ];
  for (const [version, header, want] of cases) {
    // Followed by a plain request: the flag does not leak into it.
    const input = enc(
      `POST / HTTP/${version}\r\nHost: h\r\n${header}Content-Length: 1\r\n` +
        `${version === "1.0" ? "Connection: keep-alive\r\n" : ""}\r\nx` + WRK,
    );
    everySplit(input, (sink, at) => {
      assert.deepEqual(sink.errors, [], `${header} ${at}`);
      assert.deepEqual(
        sink.requests.map((r) => r.expectContinue),
        [want, false],
        `${version} ${header} ${at}`,
      );
    });
  }
});

Deno.test("app mode rejects each bad input with the same status (obs-fold included)", () => {
  for (const [name, text, status, limits] of BAD) {
    const sink = appWhole(enc(text), { ...limits, captureHeaders: true });
    assert.deepEqual(sink.errors.map((e) => e[0]), [status], name);
    assert.deepEqual(sink.requests, [], name);
  }
});

Deno.test("app mode allocates nothing in the steady state either (without onBody)", () => {
  const pipelined = enc(WRK.repeat(16));
  const mixed = enc(BATCH + FIELDS_REQUEST.replace("\xe9", "e"));
  let count = 0;
  const sink: HttpParserSink = {
    onHead: (p) => {
      count += p.fieldCount;
      return true;
    },
    onRequest: (p) => {
      count += p.fields[3];
      return true;
    },
    onError: () => {
      throw new Error("unexpected parse error");
    },
  };
  const p = new HttpParser(sink, APP);
  const run = (rounds: number) => {
    for (let r = 0; r < rounds; r++) {
      p.execute(pipelined, 0, pipelined.length);
      p.execute(mixed, 0, 100);
      p.execute(mixed, 100, mixed.length);
    }
  };
  run(20000);
  const deltas: number[] = [];
  for (let k = 0; k < 100; k++) {
    const before = Deno.memoryUsage().heapUsed;
    run(50);
    deltas.push(Deno.memoryUsage().heapUsed - before);
  }
  deltas.sort((a, b) => a - b);
  assert.ok(count > 0);
  assert.ok(deltas[50] < 4096, `median heap growth per round: ${deltas[50]} bytes`);
});

// ---- HTTP/1.1 corners (RFC 9110 / 9112) ----

/** Feeds `text` whole; expects one error at index `at` (execute's return) with `status`. */
function failsAt(text: string, status: number, at: number, limits?: Partial<HttpParserLimits>) {
  const input = bytesOf(text);
  const sink = new Collector();
  const p = new HttpParser(sink, limits);
  const stopped = p.execute(input, 0, input.length);
  assert.deepEqual(sink.errors.map((e) => e[0]), [status], JSON.stringify(text));
  assert.equal(stopped, at, `error index for ${JSON.stringify(text)}`);
}

Deno.test("9,000 chunks of 16 bytes pass with default limits; chunk-size digits are not charged", () => {
  const chunks = ("10\r\n" + "0123456789abcdef\r\n").repeat(9000);
  const input = enc(
    `POST /many HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n${chunks}0\r\n\r\n` + WRK,
  );
  for (const cuts of [[], [1000, 50000, 100000]]) {
    const sink = parsePieces(input, cuts);
    assert.deepEqual(sink.errors, []);
    assert.equal(sink.requests.length, 2);
    assert.equal(sink.requests[0].bodyBytes, 9000 * 16);
  }
  // And in app mode, with the body delivered.
  const app = appWhole(input);
  assert.deepEqual(app.errors, []);
  assert.equal(app.requests[0].body, "0123456789abcdef".repeat(9000));
});

Deno.test("chunk lines stay bounded: extensions and padding digits share one budget per request", () => {
  const head = `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n`;
  // 16 digits per size are free, leading zeros included.
  assert.deepEqual(
    parseWhole(enc(head + "000000000000001\r\nx\r\n0000000000000000\r\n\r\n"), {
      maxHeaderBytes: 64,
    }).errors,
    [],
  );
  // Beyond that, padding costs: 300 zeros against a 256-byte budget.
  assert.equal(errorOf(head + "0".repeat(300) + "1\r\nx\r\n", { maxHeaderBytes: 256 }), 413);
  // Small extensions on many chunks add up (3 bytes each: "ab" and the CR after them).
  const ext = "1;ab\r\nx\r\n";
  const ok = head + ext.repeat(85) + "0\r\n\r\n";
  assert.deepEqual(parseWhole(enc(ok), { maxHeaderBytes: 256 }).errors, []);
  assert.equal(errorOf(head + ext.repeat(86) + "0\r\n\r\n", { maxHeaderBytes: 256 }), 413);
  // The budget is per request.
  assert.equal(parseWhole(enc(ok.repeat(5)), { maxHeaderBytes: 256 }).requests.length, 5);
});

const GOOD_HOSTS = [
  "",
  "h",
  " h ",
  "\th\t",
  "example.com",
  "example.com:8080",
  "127.0.0.1:8080",
  "EXAMPLE.com:",
  ":80",
  "[::1]",
  "[::1]:443",
  "[fe80::1%25eth0]:1",
  "[v1.x:y]",
  "a-b_c~d.e!$&'()*+,;=%41",
  "xn--bcher-kva.example",
];
const BAD_HOSTS: Array<[string, number]> = [
  // [value, index of the offending byte within the value]
  ["a b", 2],
  ["a\tb", 2],
  ["a/b", 1],
  ["a@b", 1],
  ["a?b", 1],
  ["a#b", 1],
  ["a\\b", 1],
  ["a:b", 2],
  ["a:1:2", 3],
  ["a:80 x", 5],
  ["[::1", 4],
  ["[::1]x", 5],
  ["[::1]:a", 6],
  ["[::1] x", 6],
  ["[::1]]", 5],
  ["a[b", 1],
  ["caf\xe9", 3],
  ["a\x01", 1],
  ['"a"', 0],
];

Deno.test("Host: valid forms accepted, invalid ones 400 at the byte that breaks them, at every split", () => {
  for (const host of GOOD_HOSTS) {
    const input = bytesOf(`GET / HTTP/1.1\r\nHost:${host}\r\n\r\n` + WRK);
    assert.deepEqual(parseWhole(input).errors, [], JSON.stringify(host));
    for (let i = 0; i <= input.length; i++) {
      const sink = parsePieces(input, [i]);
      assert.deepEqual(sink.errors, [], `${JSON.stringify(host)} split at ${i}`);
      assert.equal(sink.requests.length, 2);
    }
    assert.deepEqual(parseBytewise(input).errors, [], JSON.stringify(host));
  }
  for (const [host, bad] of BAD_HOSTS) {
    const prefix = "GET / HTTP/1.1\r\nHost: ";
    failsAt(prefix + host + "\r\n\r\n", 400, prefix.length + bad);
    const input = bytesOf(prefix + host + "\r\n\r\n");
    for (let i = 0; i <= input.length; i++) {
      assert.deepEqual(parsePieces(input, [i]).errors.map((e) => e[0]), [400], `${host} @${i}`);
    }
    assert.deepEqual(parseBytewise(input).errors.map((e) => e[0]), [400], host);
  }
  // Missing (HTTP/1.1) and repeated Hosts are 400 too; HTTP/1.0 needs none.
  assert.equal(errorOf("GET / HTTP/1.1\r\n\r\n"), 400);
  assert.equal(errorOf("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
  assert.equal(errorOf("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
  assert.deepEqual(parseWhole(enc("GET / HTTP/1.0\r\n\r\n")).errors, []);
});

Deno.test("414 when the header budget runs out inside the target, 431 after it", () => {
  const limits = { maxHeaderBytes: 64 };
  // "GET " + target: the budget (64 bytes from the method) ends inside the target.
  failsAt(`GET /${"a".repeat(100)} HTTP/1.1\r\n`, 414, 64, limits);
  // The target fits but leaves no room for the space after it: still the target's fault.
  failsAt(`GET /${"a".repeat(59)} HTTP/1.1\r\n`, 414, 64, limits);
  // It and the space fit; the version does not: 431.
  failsAt(`GET /${"a".repeat(58)} HTTP/1.1\r\n`, 431, 64, limits);
  failsAt(
    `GET /${"a".repeat(20)} HTTP/1.1\r\nHost: h\r\nX: ${"v".repeat(40)}\r\n\r\n`,
    431,
    64,
    limits,
  );
  // A long method also runs into the budget: 431.
  failsAt(`${"M".repeat(70)} / HTTP/1.1\r\n`, 431, 64, limits);
  // With the default budget (16 KiB), an 8 KiB target is fine, a 16 KiB one is 414.
  assert.deepEqual(parseWhole(enc(`GET /${"a".repeat(8192)} HTTP/1.1\r\n${HOST}\r\n`)).errors, []);
  assert.equal(errorOf(`GET /${"a".repeat(16384)} HTTP/1.1\r\n${HOST}\r\n`), 414);
});

Deno.test("unknown methods are valid syntax and reach the sink as METHOD_OTHER", () => {
  for (const name of ["BREW", "M-SEARCH", "PROPPATCH", "CONNECT", "TRACE", "X".repeat(100)]) {
    const sink = parseWhole(enc(`${name} /x HTTP/1.1\r\n${HOST}\r\n`));
    assert.deepEqual(sink.errors, [], name);
    assert.equal(sink.requests[0].method, METHOD_OTHER, name);
  }
});

Deno.test("what can never become valid is rejected at the byte, without waiting for the line end", () => {
  const post = `POST / HTTP/1.1\r\n${HOST}Content-Length: `;
  // Content-Length: fails at the first digit that passes maxBody (1 MiB by default).
  failsAt(post + "1048577", 413, post.length + 6);
  failsAt(post + "99999999999999999999999999", 413, post.length + 6);
  failsAt(post + "5, 2000000", 413, post.length + 9);
  failsAt(post + "0000000000000000000000000000101", 413, post.length + 30, { maxBody: 100 });
  assert.deepEqual(parseWhole(enc(post + "1048576\r\n\r\n" + "x".repeat(1048576))).errors, []);
  // Versions: a major version other than 1 is 505 at its digit.
  for (const v of ["0", "2", "5", "9"]) failsAt(`GET / HTTP/${v}`, 505, 11);
  failsAt("GET / HTTP/5.6", 505, 11);
  failsAt("GET / HTTP/x", 400, 11);
  failsAt("GET / HTTP/1.x", 400, 13);
  failsAt("GET / HTTP/1.10", 400, 14);
  failsAt("GET / HTTPS", 400, 10);
  // Methods and targets: at the byte.
  failsAt("GE\x01T", 400, 2);
  failsAt("G(ET", 400, 1);
  failsAt("GET /a\x7f", 400, 6);
  failsAt("GET /a\x00", 400, 6);
  failsAt("GET /\xff", 400, 5);
  failsAt("GET /a\tb", 400, 6);
  // A Host that goes wrong, before its line ends.
  failsAt(`GET / HTTP/1.1\r\nHost: a b`, 400, 24);
});

Deno.test("HTTP/1.2 to 1.9 are processed as HTTP/1.1 (RFC 9110 §2.5)", () => {
  for (const minor of [2, 5, 9]) {
    const input = enc(`GET / HTTP/1.${minor}\r\n${HOST}\r\n` + WRK);
    everySplit(input, (sink, at) => {
      assert.deepEqual(sink.errors, [], `1.${minor} ${at}`);
      assert.equal(sink.requests.length, 2);
      assert.equal(sink.requests[0].versionMinor, 1);
      assert.equal(sink.requests[0].keepAlive, true);
    });
    // 1.1 rules apply: Host is required.
    assert.equal(errorOf(`GET / HTTP/1.${minor}\r\n\r\n`), 400);
  }
});

Deno.test("an error before a request line began reports no method (not the previous request's)", () => {
  for (const tail of ["\n", "\r\r", "\r\n".repeat(9), "\x00"]) {
    let method = -1;
    const sink: HttpParserSink = {
      onRequest: () => true,
      onError: () => {
        method = p.method;
      },
    };
    const p = new HttpParser(sink);
    const input = enc(`HEAD / HTTP/1.1\r\n${HOST}\r\n${tail}`);
    p.execute(input, 0, input.length);
    assert.equal(method, METHOD_OTHER, JSON.stringify(tail));
  }
  // Mid-way through the empty lines (not idle), the method is not the last request's either.
  const sink = new Collector();
  const p = new HttpParser(sink);
  const input = enc(`HEAD / HTTP/1.1\r\n${HOST}\r\n\r`);
  p.execute(input, 0, input.length);
  assert.equal(p.idle, false);
  assert.equal(p.method, METHOD_OTHER);
});
