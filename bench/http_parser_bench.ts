/**
 * Micro-benchmark of the request parser on the TechEmpower plaintext request, alone
 * and 16-pipelined as wrk sends it. Not part of the tests.
 *
 * Run: deno bench bench/http_parser_bench.ts
 */
import { HttpParser, type HttpParserSink } from "../handlers/protocols/http/http_parser.ts";

const WRK = "GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const one = new TextEncoder().encode(WRK);
const sixteen = new TextEncoder().encode(WRK.repeat(16));

let seen = 0;
const sink: HttpParserSink = {
  onRequest(p) {
    seen += p.targetLength;
    return true;
  },
  onError(status, reason) {
    throw new Error(`${status} ${reason}`);
  },
};
const parser = new HttpParser(sink);

Deno.bench("1 wrk request per execute (ns/request)", { group: "wrk", baseline: true }, () => {
  parser.execute(one, 0, one.length);
});

Deno.bench("16 pipelined wrk requests per execute (divide by 16)", { group: "wrk" }, () => {
  parser.execute(sixteen, 0, sixteen.length);
});

Deno.bench("1 wrk request fed byte by byte (ns/request)", () => {
  for (let i = 0; i < one.length; i++) parser.execute(one, i, i + 1);
});

// Keeps `seen` observable so the callback cannot be optimised away.
globalThis.addEventListener("unload", () => {
  if (seen === 0) console.error("parser reported no requests");
});
