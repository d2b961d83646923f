/**
 * The admin listener of `--metrics HOST:PORT`: `GET /metrics` (Prometheus
 * text) and `GET /health` on an address of their own, so an app can own
 * every path of the main port. It runs on `Deno.serve`: it is off the hot
 * path and sees rare traffic, and the reactor shares the thread with Deno's
 * loop (it parks whenever Deno has IO to deliver).
 *
 * With `--workers`, every worker serves its own metrics on 127.0.0.1:0 and
 * reports the port on stdout (`reportAdminPort`); the supervisor reads those
 * lines (`parseAdminReport`), scrapes each worker (`scrape`) and merges the
 * answers into one exposition (`mergeExpositions`).
 *
 * @module
 */

import { PROMETHEUS_TEXT_TYPE } from "../handlers/protocols/definition.ts";
import { formatAddress } from "../syscalls/socket.ts";

/** What `startAdmin` takes. */
export interface AdminOptions {
  /** Address to listen on (an IP address or a name `Deno.serve` resolves). */
  host: string;
  /** Port; 0 picks a free one (see `AdminListener.port`). */
  port: number;
  /** The body of `GET /metrics`: Prometheus text. */
  metrics: () => string | Promise<string>;
  /**
   * Whether the server is draining. While it is, `GET /health` answers 503
   * `draining`, so a load balancer stops sending new clients, while
   * `/metrics` still shows the drain's progress.
   */
  draining?: () => boolean;
}

/** A running admin listener. */
export interface AdminListener {
  readonly host: string;
  /** The port it listens on (the real one when 0 was asked). */
  readonly port: number;
  /** `http://host:port`, as a browser or Prometheus would dial it. */
  readonly url: string;
  /** Stops listening; resolves once closed (at most about a second). Idempotent. */
  close(): Promise<void>;
}

/** The content type of the Prometheus text exposition format, with its charset. */
const PROMETHEUS_CONTENT_TYPE = `${PROMETHEUS_TEXT_TYPE}; charset=utf-8`;

/** Longest wait for in-flight admin requests when closing. */
const CLOSE_WAIT_MS = 1000;

/**
 * Listens on `host:port` and serves `/metrics` and `/health` (GET and HEAD;
 * other methods 405, other paths 404). Close it after the drain, not at its
 * start: `/metrics` is how an operator watches a drain.
 *
 * @throws {Deno.errors.AddrInUse} (and the other errors of `Deno.serve`) when it cannot listen
 */
export function startAdmin(opts: AdminOptions): AdminListener {
  const handler = async (req: Request): Promise<Response> => {
    const path = new URL(req.url).pathname;
    if (path !== "/metrics" && path !== "/health") {
      return new Response("Not Found\n", { status: 404 });
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("Method Not Allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    if (path === "/health") {
      const draining = opts.draining?.() ?? false;
      return new Response(draining ? "draining" : "OK", {
        status: draining ? 503 : 200,
        headers: { "content-type": "text/plain" },
      });
    }
    try {
      return new Response(await opts.metrics(), {
        headers: { "content-type": PROMETHEUS_CONTENT_TYPE },
      });
    } catch (e) {
      return new Response(`metrics failed: ${(e as Error).message}\n`, { status: 500 });
    }
  };
  const server = Deno.serve({ hostname: opts.host, port: opts.port, onListen() {} }, handler);
  const { port } = server.addr;
  let closing: Promise<void> | null = null;
  return {
    host: opts.host,
    port,
    url: `http://${formatAddress(opts.host, port)}`,
    close() {
      closing ??= Promise.race([
        server.shutdown().catch(() => {}),
        new Promise<void>((resolve) => {
          const t = setTimeout(resolve, CLOSE_WAIT_MS);
          server.finished.catch(() => {}).finally(() => clearTimeout(t));
        }),
      ]).then(() => server.unref());
      return closing;
    },
  };
}

/**
 * The errno name of an error `Deno.serve` throws when it cannot listen
 * (EADDRINUSE, EADDRNOTAVAIL, EACCES), or null for any other error.
 */
export function listenErrorCode(e: unknown): string | null {
  if (e instanceof Deno.errors.AddrInUse) return "EADDRINUSE";
  if (e instanceof Deno.errors.AddrNotAvailable) return "EADDRNOTAVAIL";
  if (e instanceof Deno.errors.PermissionDenied) return "EACCES";
  return null;
}

const REPORT_PREFIX = "reactor-admin-port ";

/**
 * In a worker: tells the supervisor, on stdout (one line), the port of this
 * worker's admin listener.
 */
export function reportAdminPort(port: number): void {
  const line = new TextEncoder().encode(`${REPORT_PREFIX}${port}\n`);
  let off = 0;
  while (off < line.length) off += Deno.stdout.writeSync(line.subarray(off));
}

/** The port in a worker's stdout line written by `reportAdminPort`, or null for any other line. */
export function parseAdminReport(line: string): number | null {
  if (!line.startsWith(REPORT_PREFIX)) return null;
  const rest = line.slice(REPORT_PREFIX.length).trim();
  if (!/^\d{1,5}$/.test(rest)) return null;
  const port = Number(rest);
  return port >= 1 && port <= 65535 ? port : null;
}

/**
 * GETs `http://127.0.0.1:port/metrics` within `timeoutMs` and returns the
 * body; throws on a refusal, a timeout or a status other than 200.
 *
 * A plain HTTP/1.0 exchange over `Deno.connect` rather than `fetch`: it
 * never goes through an HTTP_PROXY of the environment and keeps no pooled
 * connection to a worker that may be gone at the next scrape.
 */
export async function scrape(port: number, timeoutMs: number): Promise<string> {
  const state = { conn: null as Deno.TcpConn | null, over: false };
  const exchange = (async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    if (state.over) {
      conn.close();
      throw new Error("connected too late");
    }
    state.conn = conn;
    const request = new TextEncoder().encode("GET /metrics HTTP/1.0\r\nHost: worker\r\n\r\n");
    for (let off = 0; off < request.length;) off += await conn.write(request.subarray(off));
    const decoder = new TextDecoder();
    let text = "";
    const buf = new Uint8Array(64 << 10);
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      text += decoder.decode(buf.subarray(0, n), { stream: true });
    }
    return text + decoder.decode();
  })();
  exchange.catch(() => {}); // after the deadline, its failure is nobody's business
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const text = await Promise.race([exchange, deadline]);
    const end = text.indexOf("\r\n\r\n");
    const status = text.match(/^HTTP\/1\.[01] (\d{3})/);
    if (end < 0 || !status) throw new Error("not an HTTP response");
    if (status[1] !== "200") throw new Error(`HTTP ${status[1]}`);
    return text.slice(end + 4);
  } finally {
    state.over = true;
    clearTimeout(timer);
    try {
      state.conn?.close();
    } catch { /* already closed */ }
  }
}

/** Sample-name suffixes that belong to the family declared before them. */
const FAMILY_SUFFIXES = ["_bucket", "_sum", "_count", "_total", "_created", "_info"];

function belongsTo(sample: string, family: string): boolean {
  if (sample === family) return true;
  return sample.startsWith(family) && FAMILY_SUFFIXES.includes(sample.slice(family.length));
}

/**
 * Merges Prometheus text expositions (one per worker, each sample already
 * labelled) into one valid exposition: per metric family its `# HELP` and
 * `# TYPE` lines once (the first seen), then the samples of every input in
 * input order. Families keep the order in which they first appear.
 */
export function mergeExpositions(texts: readonly string[]): string {
  interface Family {
    help: string | null;
    type: string | null;
    samples: string[];
  }
  const families = new Map<string, Family>();
  const family = (name: string): Family => {
    let f = families.get(name);
    if (f === undefined) {
      f = { help: null, type: null, samples: [] };
      families.set(name, f);
    }
    return f;
  };
  for (const text of texts) {
    let current: string | null = null;
    for (const raw of text.split("\n")) {
      const line = raw.trimEnd();
      if (line === "") continue;
      const meta = line.match(/^#\s*(HELP|TYPE)\s+(\S+)/);
      if (meta) {
        const f = family(meta[2]);
        current = meta[2];
        if (meta[1] === "HELP") f.help ??= line;
        else f.type ??= line;
        continue;
      }
      if (line.startsWith("#")) continue; // other comments
      const name = line.match(/^[^\s{]+/)![0];
      family(current !== null && belongsTo(name, current) ? current : name).samples.push(line);
    }
  }
  const out: string[] = [];
  for (const f of families.values()) {
    if (f.help !== null) out.push(f.help);
    if (f.type !== null) out.push(f.type);
    out.push(...f.samples);
  }
  return out.length === 0 ? "" : out.join("\n") + "\n";
}
