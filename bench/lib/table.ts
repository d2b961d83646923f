/**
 * Plain-text tables for terminal output.
 *
 * @module
 */

/** Column alignment: numbers read best right-aligned. */
export type Align = "left" | "right";

/**
 * Formats rows as a fixed-width text table with a header row and a rule under it. Columns
 * are padded to their widest cell; `align` defaults to left for the first column and right
 * for the others.
 */
export function formatTable(header: string[], rows: string[][], align?: Align[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const al = header.map((_, i) => align?.[i] ?? (i === 0 ? "left" : "right"));
  const line = (cells: string[]) =>
    cells.map((c, i) => al[i] === "left" ? c.padEnd(widths[i]) : c.padStart(widths[i])).join("  ")
      .trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(header), rule, ...rows.map((r) => line(header.map((_, i) => r[i] ?? "")))].join(
    "\n",
  );
}

/** Formats a number with `digits` decimals, or "-" for null, NaN or infinity. */
export function num(v: number | null | undefined, digits = 0): string {
  return v === null || v === undefined || !Number.isFinite(v) ? "-" : v.toFixed(digits);
}
