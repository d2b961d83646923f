/**
 * What a protocol file exports so that the server, the CLI, `--help` and
 * `/metrics` can use it without naming it: a `ProtocolDefinition`.
 *
 * To add a protocol: write `handlers/protocols/NAME.ts` exporting one
 * definition, and add it to the list in `handlers/protocols/mod.ts`. Its
 * flags appear in `reactor serve --help`, are parsed and checked by the CLI
 * and handed to `create`; its metrics appear on `/metrics`.
 *
 * @module
 */

import type { Connection, Protocol } from "../connection.ts";
import type { ConnectionContext } from "../context.ts";

/** How the CLI reads a protocol flag's value. */
export type FlagKind =
  /** A whole number of bytes (or of anything), checked against min and max. */
  | "integer"
  /** Seconds as a decimal (`0.5`), handed over in milliseconds. */
  | "seconds"
  /** `HOST:PORT` (`[::1]:80` for IPv6), handed over as `{ host, port }`. */
  | "address"
  /** Any non-empty text. */
  | "string";

/** A command-line flag a protocol takes (`--NAME VALUE`). */
export interface FlagSpec {
  /** The flag without dashes, e.g. `max-body`. */
  readonly name: string;
  /** The option key it fills in `create`'s options, e.g. `maxBody`. */
  readonly key: string;
  /** How its value is read. */
  readonly kind: FlagKind;
  /** One line for `--help`. */
  readonly help: string;
  /** The value (in the parsed unit) when the flag is absent; omit for none. */
  readonly default?: number | string;
  /** Smallest value allowed (integer). */
  readonly min?: number;
  /** Largest value allowed (integer). */
  readonly max?: number;
  /** Whether the protocol cannot run without it. */
  readonly required?: boolean;
}

/** One line of `/metrics` (Prometheus text format). */
export interface Metric {
  /** Name without the `reactor_` prefix, e.g. `http_requests_total`. */
  readonly name: string;
  /** Prometheus type. */
  readonly type: "counter" | "gauge";
  /** One line of help. */
  readonly help: string;
  /** The value now. */
  readonly value: number;
}

/** A counter line of `/metrics`. */
export function counter(name: string, help: string, value: number): Metric {
  return { name, type: "counter", help, value };
}

/** A gauge line of `/metrics`. */
export function gauge(name: string, help: string, value: number): Metric {
  return { name, type: "gauge", help, value };
}

/** The content type of the Prometheus text exposition format (`/metrics`). */
export const PROMETHEUS_TEXT_TYPE = "text/plain; version=0.0.4";

/** What `create` is given by the server that runs the protocol. */
export interface ProtocolSetup {
  /** The connections' shared state: the reactor, read buffer, counters, limits and timeouts. */
  readonly context: ConnectionContext;
  /** The server's whole `/metrics` text (for a protocol that serves it). */
  metricsText(): string;
  /** Where the server listens (the real port when 0 was asked). */
  readonly address: { readonly host: string; readonly port: number };
}

/** A protocol set up on one server: makes the per-connection part. */
export interface ProtocolInstance {
  /** The protocol object for a new connection (may be shared if stateless). */
  connect(conn: Connection): Protocol;
  /** Protocol-specific metrics, added to the server's. */
  metrics?(): Metric[];
  /** The server has stopped: close whatever the protocol opened itself (upstream sockets). */
  stop?(): void;
}

/** A protocol as the registry, the CLI and the server see it. */
export interface ProtocolDefinition {
  /** The name `--app` takes. */
  readonly name: string;
  /** One line for `--help`. */
  readonly summary: string;
  /** Its own command-line flags. */
  readonly flags: readonly FlagSpec[];
  /**
   * Sets the protocol up on a server. `options` holds the flags' values by
   * `key` (defaults applied by the CLI; library callers pass what they want).
   * It may return a promise (loading a user's module, say); `Server.create`
   * awaits it, `Server.createSync` refuses it.
   *
   * @throws {TypeError} when a required option is missing or malformed
   */
  create(
    setup: ProtocolSetup,
    options: Record<string, unknown>,
  ): ProtocolInstance | Promise<ProtocolInstance>;
}
