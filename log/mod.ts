/**
 * The logging door: every module logs through `getLogger` from here, and the
 * CLI (or a library user's program, by default) routes the `reactor`
 * category to stderr: LogTape with one synchronous sink, so a line is out
 * before the process exits, in text or JSON Lines.
 *
 * LogTape is imported here by its full `npm:` specifier, and only here: a
 * program in another folder that imports `mod.ts` does not see this repo's
 * import map, so a bare `@logtape/logtape` would not resolve there.
 *
 * @module
 */

import {
  configureSync,
  getConfig,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogLevel,
  type LogRecord,
  // deno-lint-ignore no-import-prefix -- see the module comment: library use from any folder
} from "npm:@logtape/logtape@2.4.2";

export { getLogger, type Logger, type LogLevel };

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
