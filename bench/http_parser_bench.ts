/**
 * Micro-benchmark of the request parser: the TechEmpower plaintext request, alone and
 * 16-pipelined as wrk sends it, and fed byte by byte (the built-in app's configuration);
 * a browser-shaped request (11 fields); and app mode (captureHeaders, onHead, onBody) as
 * the fetch layer runs it. Not part of the tests.
 *
 * Each configuration runs on its own instance of the parser module (imported again
 * under a query string), as it would in its own server: V8 optimises `execute` for the
 * sinks and paths it has seen, and mixing the app-mode sink into the wrk cases would
 * time polymorphic code that no real server runs. Every case also runs before anything
 * is measured (deno bench runs the ungrouped case first; a path first taken inside a
 * measured case would deoptimise and re-optimise there, timing the compiler).
 *
 * Run: deno bench bench/http_parser_bench.ts
 */
import { HttpParser } from "../handlers/protocols/http/http_parser.ts";
import { HttpParser as BrowserParser } from "../handlers/protocols/http/http_parser.ts?browser";
import { HttpParser as AppParser } from "../handlers/protocols/http/http_parser.ts?app-mode";

const encoder = new TextEncoder();
const WRK = "GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const one = encoder.encode(WRK);
const sixteen = encoder.encode(WRK.repeat(16));
const BROWSER = "GET /app/page?id=42 HTTP/1.1\r\nHost: example.com\r\n" +
  "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
  "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
  "Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n" +
  "Connection: keep-alive\r\nCookie: session=0123456789abcdef; theme=dark\r\n" +
  "Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n" +
  "Priority: u=0, i\r\n\r\n";
const browser = encoder.encode(BROWSER);
const post = encoder.encode(
  "POST /api HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/json\r\n" +
    'Content-Length: 27\r\n\r\n{"message":"Hello, World!"}',
);

// The sinks are typed by what they read, so that each fits its own module instance.
let seen = 0;
const sink = () => ({
  onRequest(p: { targetLength: number }): boolean {
    seen += p.targetLength;
    return true;
  },
  onError(status: number, reason: string): void {
    throw new Error(`${status} ${reason}`);
  },
});
const parser = new HttpParser(sink());
const browserParser = new BrowserParser(sink());

const appParser = new AppParser({
  onHead(p: { fieldCount: number }): boolean {
    seen += p.fieldCount;
    return true;
  },
  onBody(_data: Uint8Array, start: number, end: number): void {
    seen += end - start;
  },
  ...sink(),
}, { captureHeaders: true });

for (let k = 0; k < 20_000; k++) {
  parser.execute(one, 0, one.length);
  parser.execute(sixteen, 0, sixteen.length);
  if (k % 16 === 0) { for (let i = 0; i < one.length; i++) parser.execute(one, i, i + 1); }
  browserParser.execute(browser, 0, browser.length);
  appParser.execute(one, 0, one.length);
  appParser.execute(sixteen, 0, sixteen.length);
  appParser.execute(browser, 0, browser.length);
  appParser.execute(post, 0, post.length);
}

Deno.bench("1 wrk request per execute (ns/request)", { group: "wrk", baseline: true }, () => {
  parser.execute(one, 0, one.length);
});

Deno.bench("16 pipelined wrk requests per execute (divide by 16)", { group: "wrk" }, () => {
  parser.execute(sixteen, 0, sixteen.length);
});

Deno.bench("1 wrk request fed byte by byte (ns/request)", () => {
  for (let i = 0; i < one.length; i++) parser.execute(one, i, i + 1);
});

Deno.bench("browser request, 11 fields (ns/request)", { group: "browser", baseline: true }, () => {
  browserParser.execute(browser, 0, browser.length);
});

Deno.bench("app mode: browser request, 11 fields captured", { group: "browser" }, () => {
  appParser.execute(browser, 0, browser.length);
});

Deno.bench("app mode: 1 wrk request per execute (ns/request)", { group: "app" }, () => {
  appParser.execute(one, 0, one.length);
});

Deno.bench("app mode: 16 pipelined wrk requests (divide by 16)", { group: "app" }, () => {
  appParser.execute(sixteen, 0, sixteen.length);
});

Deno.bench("app mode: POST with a 27-byte body, onBody", { group: "app" }, () => {
  appParser.execute(post, 0, post.length);
});

// Keeps `seen` observable so the callbacks cannot be optimised away.
globalThis.addEventListener("unload", () => {
  if (seen === 0) console.error("parser reported no requests");
});
