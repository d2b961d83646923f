/**
 * Command-line parsing for `main.ts`: `parseArgs` from `node:util` in strict
 * mode (an unknown flag is an error), then validation of every value, so a
 * bad flag ends in one line on stderr and exit code 2.
 *
 * @module
 */

import { parseArgs } from "node:util";
import denoJson from "../deno.json" with { type: "json" };
import { type BackendChoice, BATCH_SIZE, MAX_BATCH_WAIT_US } from "../reactor/backend.ts";
import type { StaticOptions } from "../handlers/protocols/http/static/static_files.ts";
import { type FlagSpec, PROTOCOLS } from "../handlers/protocols/mod.ts";
import { ACCESS_LOG_FORMATS, type AccessLogFormat } from "../handlers/protocols/http/access_log.ts";

/** The version printed by `--version`. */
export const VERSION: string = denoJson.version;

/** A usage error: printed as one line, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Log levels accepted by `--log-level`. */
export const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal"] as const;
/** One of `LOG_LEVELS`. */
export type LogLevelName = typeof LOG_LEVELS[number];

/** `serve` settings. */
export interface ServeCommand {
  command: "serve";
  /** The protocol's name in the registry. */
  app: string;
  /** The protocol's own flags, by their option keys (defaults applied). */
  protocolOptions: Record<string, unknown>;
  host: string;
  port: number;
  /** `--trigger`; "auto": edge-triggered on epoll, level-triggered on the others. */
  trigger: "level" | "edge" | "auto";
  backend: BackendChoice;
  /** `--batch-wait`: batched waits, in µs (0: off); see `ReactorOptions.batchWaitUs`. */
  batchWaitUs: number;
  maxEvents: number;
  backlog: number;
  logLevel: LogLevelName;
  logFormat: "text" | "json";
  /** Worker processes; 1 serves in this process. */
  workers: number;
  /** Set in worker processes started by the supervisor (internal). */
  workerId: number | null;
  shutdownTimeoutMs: number;
  idleTimeoutMs: number;
  headerTimeoutMs: number;
  writeTimeoutMs: number;
  maxConnections: number;
  maxOutputBytes: number;
  statsIntervalMs: number;
  /** `--metrics HOST:PORT`: the admin listener serving /metrics for every worker, or null. */
  metrics: { host: string; port: number } | null;
  /** `--module FILE`: serve its default export's `fetch` (deno serve's convention), or null. */
  module: string | null;
  /** `--access-log FORMAT` (with --module or --root): one line per request on stdout, or null. */
  accessLog: AccessLogFormat | null;
  /** `--root DIR` and its flags: a directory served at `/`, or null. */
  files: StaticOptions | null;
}

/** `probe` settings: one HTTP GET, exit 0 on 200. */
export interface ProbeCommand {
  command: "probe";
  host: string;
  port: number;
  path: string;
  timeoutMs: number;
}

/** What the command line asked for. */
export type Command =
  | ServeCommand
  | ProbeCommand
  | { command: "help"; text: string }
  | { command: "version"; text: string };

/** The flag column of --help lines. */
const COLUMN = 30;

function helpLine(flag: string, text: string): string {
  return `  ${flag.padEnd(COLUMN - 2)}${text}`;
}

function protocolFlagLine(f: FlagSpec): string {
  const arg = f.kind === "address" ? "HOST:PORT" : f.kind === "seconds" ? "S" : "N";
  const def = f.required ? " (required)" : f.default !== undefined ? ` [${f.default}]` : "";
  return helpLine(`--${f.name} ${arg}`, f.help + def);
}

/** The text of `--help`: the common flags, then each protocol's own. */
export const HELP: string = `reactor ${VERSION}: an epoll network server in TypeScript for Deno

Usage:
  reactor serve [options]     serve until SIGINT/SIGTERM
  reactor probe [options]     GET a path, exit 0 on HTTP 200 (container health checks)
  reactor --help | --version

serve options (default in brackets):
  --app NAME                  protocol: ${PROTOCOLS.map((p) => p.name).join(", ")} [${
  PROTOCOLS[0].name
}]
  --host ADDR                 IPv4 or IPv6 address to listen on [127.0.0.1]
  --port N                    TCP port, 0 = any free port [8080]
  --trigger level|edge|auto   epoll trigger mode; edge drains every fd (to EAGAIN or a short read);
                              auto: edge on epoll, level on the backends that have only that [auto]
  --backend NAME              epoll, poll, select, io_uring, or auto (io_uring if it works) [epoll]
  --batch-wait US             batched waits: a loop turn waits up to US µs for ${BATCH_SIZE} events (less CPU
                              per request under load, up to US µs more latency; io_uring in the
                              kernel, 6.12+; other backends sleep after a small turn); 0 = off [0]
  --max-events N              size of the one epoll_wait events array [1024]
  --backlog N                 listen(2) backlog, clamped by net.core.somaxconn [4096]
  --log-level LEVEL           trace, debug, info, warning, error, fatal [info]
  --log-format text|json      log line format on stderr [text]
  --workers N|auto            worker processes on one port (SO_REUSEPORT); auto = cores [1]
  --metrics HOST:PORT         admin listener: GET /metrics covers every worker [off]
  --module FILE               serve FILE's default export { fetch } (as deno serve) [off]
  --access-log FORMAT         with --module/--root: common, combined or json lines on stdout [off]
  --root DIR                  serve DIR's files at / (with --module: what is no file goes to it) [off]
  --list                      with --root: list directories that have no index.html [off: 403]
  --dotfiles                  with --root: serve .env, .git/ and other dot names [off: 404]
  --follow-symlinks           with --root: follow symlinks that lead out of DIR [off: 404]
  --cache-control VALUE       with --root: the Cache-Control header of files [none]
  --shutdown-timeout S        on SIGTERM/SIGINT, finish in-flight work for at most S s [10]
  --idle-timeout S            close a keep-alive connection idle for S s; 0 = never [60]
  --header-timeout S          a request must arrive whole within S s (slowloris) [10]
  --write-timeout S           close a peer that takes no bytes for S s [30]
  --max-connections N         stop accepting while N are open; 0 = no cap [0]
  --max-output-bytes BYTES    close a writer that adds this much past the high-water mark [16777216]
  --stats-interval S          log counters every S s; 0 = never [0]
${
  PROTOCOLS.map((p) =>
    `\n--app ${p.name}: ${p.summary}\n` +
    (p.flags.length === 0
      ? "  (no options of its own)\n"
      : p.flags.map(protocolFlagLine).join("\n") + "\n")
  ).join("")
}
probe options:
  --host ADDR [127.0.0.1]  --port N [8080]  --path P [/health]  --timeout-ms N [2000]
`;

function integer(flag: string, raw: string | undefined, def: number, min: number, max: number) {
  if (raw === undefined) return def;
  if (!/^\d+$/.test(raw)) throw new UsageError(`--${flag} must be a whole number, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) {
    throw new UsageError(`--${flag} must be between ${min} and ${max}, got ${raw}`);
  }
  return n;
}

/** Seconds as a decimal (e.g. 0.5), returned in ms; 0 turns the feature off. */
function seconds(flag: string, raw: string | undefined, def: number): number {
  if (raw === undefined) return def * 1000;
  if (!/^\d+(\.\d+)?$/.test(raw)) {
    throw new UsageError(`--${flag} must be a number of seconds (e.g. 10 or 0.5), got "${raw}"`);
  }
  const ms = Math.round(Number(raw) * 1000);
  if (ms > 86_400_000) throw new UsageError(`--${flag} must be at most a day, got ${raw}`);
  return ms;
}

function workers(raw: string | undefined): number {
  if (raw === undefined) return 1;
  if (raw === "auto") return navigator.hardwareConcurrency || 1;
  return integer("workers", raw, 1, 1, 256);
}

function hostPort(flag: string, raw: string, minPort = 1): { host: string; port: number } {
  const m = raw.match(/^\[?([^\]]*?)\]?:(\d+)$/);
  if (!m || m[1] === "") throw new UsageError(`--${flag} must be HOST:PORT, got "${raw}"`);
  return { host: m[1], port: integer(flag + " port", m[2], 0, minPort, 65535) };
}

function oneOf<T extends string>(
  flag: string,
  raw: string | undefined,
  def: T,
  allowed: readonly T[],
): T {
  if (raw === undefined) return def;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new UsageError(`--${flag} must be one of ${allowed.join(", ")}, got "${raw}"`);
  }
  return raw as T;
}

function parse(args: string[], options: Record<string, { type: "string" | "boolean" }>) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (e) {
    // node:util's messages run to several sentences; keep the first, in our style.
    const first = (e as Error).message.split(/\.\s/)[0].replace(/\.$/, "");
    throw new UsageError(
      first.replace(/^Unknown option/, "unknown option").replace(/^Option/, "option"),
    );
  }
}

/** Parses argv (without the program name). Throws `UsageError` on bad input. */
export function parseCommandLine(argv: string[]): Command {
  const [first, ...rest] = argv;
  if (first === undefined || first === "--help" || first === "-h" || first === "help") {
    return { command: "help", text: HELP };
  }
  if (first === "--version" || first === "-V" || first === "version") {
    return {
      command: "version",
      text: `reactor ${VERSION} (deno ${Deno.version.deno}, ${Deno.build.target})`,
    };
  }
  if (first === "serve") return parseServe(rest);
  if (first === "probe") {
    const { values: v } = parse(rest, {
      host: { type: "string" },
      port: { type: "string" },
      path: { type: "string" },
      "timeout-ms": { type: "string" },
    }) as { values: Record<string, string | undefined> };
    const path = v.path ?? "/health";
    if (!path.startsWith("/")) throw new UsageError(`--path must start with "/", got "${path}"`);
    return {
      command: "probe",
      host: v.host ?? "127.0.0.1",
      port: integer("port", v.port, 8080, 1, 65535),
      path,
      timeoutMs: integer("timeout-ms", v["timeout-ms"], 2000, 1, 600000),
    };
  }
  throw new UsageError(`unknown command "${first}" (try: reactor --help)`);
}

/** The flags every protocol shares. */
const COMMON_FLAGS = [
  "app",
  "host",
  "port",
  "trigger",
  "backend",
  "batch-wait",
  "max-events",
  "backlog",
  "log-level",
  "log-format",
  "workers",
  "worker-id",
  "metrics",
  "module",
  "access-log",
  "root",
  "cache-control",
  "shutdown-timeout",
  "idle-timeout",
  "header-timeout",
  "write-timeout",
  "max-connections",
  "max-output-bytes",
  "stats-interval",
];

/** Every protocol's flags by name, with the protocols that take each. */
function protocolFlags(): Map<string, { spec: FlagSpec; owners: string[] }> {
  const flags = new Map<string, { spec: FlagSpec; owners: string[] }>();
  for (const p of PROTOCOLS) {
    for (const spec of p.flags) {
      const seen = flags.get(spec.name);
      if (seen) seen.owners.push(p.name);
      else flags.set(spec.name, { spec, owners: [p.name] });
    }
  }
  return flags;
}

/** A protocol flag's value in the unit `create` takes. */
function protocolFlagValue(spec: FlagSpec, raw: string): unknown {
  switch (spec.kind) {
    case "integer":
      return integer(spec.name, raw, 0, spec.min ?? 0, spec.max ?? Number.MAX_SAFE_INTEGER);
    case "seconds":
      return seconds(spec.name, raw, 0);
    case "address":
      return hostPort(spec.name, raw);
    case "string":
      if (raw === "") throw new UsageError(`--${spec.name} must not be empty`);
      return raw;
  }
}

function accessLogFlag(
  raw: string | undefined,
  module: string | undefined,
): AccessLogFormat | null {
  if (raw === undefined) return null;
  const format = oneOf("access-log", raw, "common", ACCESS_LOG_FORMATS);
  if (module === undefined) throw new UsageError("--access-log is for --module and --root");
  return format;
}

/** The on/off flags of --root. */
const STATIC_SWITCHES = ["list", "dotfiles", "follow-symlinks"];

/** `--root DIR` and the flags that only mean something with it. */
function rootFlags(values: Record<string, unknown>, app: string): StaticOptions | null {
  const root = values.root as string | undefined;
  const cacheControl = values["cache-control"] as string | undefined;
  if (root === undefined) {
    for (const name of [...STATIC_SWITCHES, "cache-control"]) {
      if (values[name] !== undefined) throw new UsageError(`--${name} is only for --root`);
    }
    return null;
  }
  if (root === "") throw new UsageError("--root must not be empty");
  if (app !== "http") throw new UsageError(`--root is only for --app http, not --app ${app}`);
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(root);
  } catch (e) {
    throw new UsageError(`--root ${root}: ${(e as Error).message.split(":")[0]}`);
  }
  if (!info.isDirectory) throw new UsageError(`--root ${root}: not a directory`);
  if (cacheControl !== undefined && (cacheControl === "" || /[\r\n]/.test(cacheControl))) {
    throw new UsageError("--cache-control must be one non-empty header value");
  }
  return {
    root,
    listDirectories: values.list === true,
    dotfiles: values.dotfiles === true,
    followSymlinks: values["follow-symlinks"] === true,
    cacheControl: cacheControl ?? "",
  };
}

function moduleFlag(raw: string | undefined, app: string): string | null {
  if (raw === undefined) return null;
  if (raw === "") throw new UsageError("--module must not be empty");
  if (app !== "http") throw new UsageError(`--module is only for --app http, not --app ${app}`);
  return raw;
}

function parseServe(rest: string[]): ServeCommand | { command: "help"; text: string } {
  const byName = protocolFlags();
  const options: Record<string, { type: "string" | "boolean" }> = {
    help: { type: "boolean" },
  };
  for (const name of [...COMMON_FLAGS, ...byName.keys()]) options[name] = { type: "string" };
  for (const name of STATIC_SWITCHES) options[name] = { type: "boolean" };
  const { values } = parse(rest, options);
  if (values.help) return { command: "help", text: HELP };
  const v = values as Record<string, string | undefined>;
  const app = oneOf("app", v.app, PROTOCOLS[0].name, PROTOCOLS.map((p) => p.name));
  const protocolOptions: Record<string, unknown> = {};
  for (const [name, { spec, owners }] of byName) {
    const raw = v[name];
    if (!owners.includes(app)) {
      if (raw !== undefined) {
        throw new UsageError(`--${name} is only for --app ${owners.join(" or --app ")}`);
      }
      continue;
    }
    if (raw === undefined) {
      if (spec.required) throw new UsageError(`--app ${app} needs --${name}`);
      if (spec.default !== undefined) protocolOptions[spec.key] = spec.default;
      continue;
    }
    protocolOptions[spec.key] = protocolFlagValue(spec, raw);
  }
  const backend = oneOf(
    "backend",
    v.backend,
    "epoll",
    ["epoll", "poll", "select", "io_uring", "auto"] as const,
  );
  const trigger = oneOf("trigger", v.trigger, "auto", ["level", "edge", "auto"] as const);
  if (trigger === "edge" && backend !== "epoll") {
    throw new UsageError(
      `--trigger edge needs --backend epoll (${backend} is level-triggered only)`,
    );
  }
  const batchWaitUs = integer("batch-wait", v["batch-wait"], 0, 0, MAX_BATCH_WAIT_US);
  const host = v.host ?? "127.0.0.1";
  if (host === "") throw new UsageError("--host must not be empty");
  return {
    command: "serve",
    app,
    protocolOptions,
    host,
    port: integer("port", v.port, 8080, 0, 65535),
    trigger,
    backend,
    batchWaitUs,
    maxEvents: integer("max-events", v["max-events"], 1024, 1, 65536),
    backlog: integer("backlog", v.backlog, 4096, 1, 65535),
    logLevel: oneOf("log-level", v["log-level"], "info", LOG_LEVELS),
    logFormat: oneOf("log-format", v["log-format"], "text", ["text", "json"] as const),
    workers: workers(v.workers),
    workerId: v["worker-id"] === undefined
      ? null
      : integer("worker-id", v["worker-id"], 0, 0, 1024),
    metrics: v.metrics === undefined ? null : hostPort("metrics", v.metrics, 0),
    module: moduleFlag(v.module, app),
    accessLog: accessLogFlag(v["access-log"], v.module ?? v.root),
    files: rootFlags(values, app),
    shutdownTimeoutMs: seconds("shutdown-timeout", v["shutdown-timeout"], 10),
    idleTimeoutMs: seconds("idle-timeout", v["idle-timeout"], 60),
    headerTimeoutMs: seconds("header-timeout", v["header-timeout"], 10),
    writeTimeoutMs: seconds("write-timeout", v["write-timeout"], 30),
    maxConnections: integer("max-connections", v["max-connections"], 0, 0, 10_000_000),
    // At least the high-water mark (64 KiB): below it every queued byte would overflow.
    maxOutputBytes: integer(
      "max-output-bytes",
      v["max-output-bytes"],
      16 << 20,
      64 << 10,
      2 ** 31 - 1,
    ),
    statsIntervalMs: seconds("stats-interval", v["stats-interval"], 0),
  };
}
