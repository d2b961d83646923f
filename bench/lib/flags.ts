/**
 * Numeric command-line values for the benchmark tools. A value that is not a
 * number in range ends the tool with one clear line and exit status 2, never
 * a NaN that runs on and measures nothing.
 *
 * @module
 */

/** What a numeric flag accepts. */
export interface NumberRule {
  /** Smallest value accepted (default 0). */
  min?: number;
  /** Whole numbers only. */
  integer?: boolean;
}

/** `--name`'s value `text` as a number; throws an Error saying what was wanted. */
export function parseNumberFlag(name: string, text: string, rule: NumberRule = {}): number {
  const min = rule.min ?? 0;
  const n = Number(text);
  if (
    text.trim() === "" || !Number.isFinite(n) || n < min ||
    (rule.integer === true && !Number.isSafeInteger(n))
  ) {
    const kind = rule.integer ? "a whole number" : "a number";
    throw new Error(`--${name} wants ${kind} >= ${min}, got '${text}'`);
  }
  return n;
}

/** `--name`'s comma-separated value `text` as numbers (at least one). */
export function parseNumberListFlag(name: string, text: string, rule: NumberRule = {}): number[] {
  const parts = text.split(",").map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) throw new Error(`--${name} wants a comma-separated list, got '${text}'`);
  return parts.map((p) => parseNumberFlag(name, p, rule));
}

/** Runs `parse`; if it throws, prints `tool: message` and exits with status 2. */
export function orExit<T>(tool: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    console.error(`${tool}: ${(e as Error).message}`);
    Deno.exit(2);
  }
}

/** `parseNumberFlag`, ending the tool on nonsense. */
export function numberFlag(
  tool: string,
  name: string,
  text: string,
  rule: NumberRule = {},
): number {
  return orExit(tool, () => parseNumberFlag(name, text, rule));
}

/** `parseNumberListFlag`, ending the tool on nonsense. */
export function numberListFlag(
  tool: string,
  name: string,
  text: string,
  rule: NumberRule = {},
): number[] {
  return orExit(tool, () => parseNumberListFlag(name, text, rule));
}
