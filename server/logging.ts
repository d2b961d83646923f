/**
 * Logging set-up: LogTape with one synchronous stderr sink, so a line is out
 * before the process exits, in text or JSON Lines.
 *
 * @module
 */

import {
  configureSync,
  getConfig,
  getJsonLinesFormatter,
  getTextFormatter,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";

/** Routes the `reactor` log category to stderr at `level` and above. */
export function setUpLogging(level: LogLevel, format: "text" | "json"): void {
  const formatter = format === "json" ? getJsonLinesFormatter() : getTextFormatter({
    value: (v) =>
      typeof v === "string" ? v : Deno.inspect(v, { compact: true, breakLength: Infinity }),
  });
  const encoder = new TextEncoder();
  const sink = (record: LogRecord) => {
    Deno.stderr.writeSync(encoder.encode(formatter(record)));
  };
  configureSync({
    reset: true,
    sinks: { stderr: sink },
    loggers: [
      { category: ["reactor"], lowestLevel: level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/**
 * For library use: when the program has configured no logging at all,
 * route the `reactor` category to stderr at `warning` and above, so a
 * protocol that throws or an accept error is never silent. A program that
 * configured LogTape itself is left alone.
 */
export function ensureLogging(): void {
  if (getConfig() === null) setUpLogging("warning", "text");
}
