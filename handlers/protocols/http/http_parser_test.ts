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
  ["HTTP/1.2", `GET / HTTP/1.2\r\n${HOST}\r\n`, 505],
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
  ["target too large", `GET /${"a".repeat(300)} HTTP/1.1\r\n${HOST}\r\n`, 431, {
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
