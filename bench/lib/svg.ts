/**
 * A dependency-free grouped bar chart rendered as a standalone SVG document.
 *
 * @module
 */

/** One series of bars (one bar per group), e.g. "plain" or "pipelined". */
export interface BarSeries {
  /** Legend text. */
  name: string;
  /** Fill colour; default: from a colour-blind-friendly palette. */
  color?: string;
}

/** One group of bars on the x axis, e.g. one server. */
export interface BarGroup {
  /** Label under the group. */
  label: string;
  /** Smaller second line under the label (e.g. throughput). */
  sublabel?: string;
  /** One value per series; null draws "n/a" instead of a bar. */
  values: (number | null)[];
  /** Draws the label in bold and shades the group's background. */
  highlight?: boolean;
}

/** Everything {@link barChartSvg} needs. */
export interface BarChartOptions {
  /** Bold title at the top. */
  title: string;
  /** Grey line under the title (parameters, machine). */
  subtitle?: string;
  /** Y-axis caption, e.g. "CPU µs per request". */
  yLabel: string;
  /** The series, in legend and bar order. */
  series: BarSeries[];
  /** The groups, left to right. */
  groups: BarGroup[];
  /** Small grey text at the bottom left; "\n" starts a new line. */
  footnote?: string;
  /** Formats a value for the label on its bar; default: 3 significant digits. */
  format?: (v: number) => string;
  /** Width in px; default: grows with the number of bars, at least 720. */
  width?: number;
  /** Height in px; default 460. */
  height?: number;
}

/** Default series colours (Tableau 10: blue, orange, teal, red, green). */
export const PALETTE = ["#4e79a7", "#f28e2b", "#76b7b2", "#e15759", "#59a14f"];

/** Escapes text for use in SVG/XML content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * "Nice" axis ticks from 0 to at least `max`, in steps of 1, 2, 2.5 or 5 times a power of
 * ten: the step whose last tick is closest above `max` with at most `count` + 3 intervals.
 */
export function niceTicks(max: number, count = 5): number[] {
  if (!(max > 0)) return [0, 1];
  const pow = 10 ** Math.floor(Math.log10(max / count));
  let best = { step: 0, n: 0, top: Infinity };
  for (const m of [1, 2, 2.5, 5, 10, 20, 25, 50]) {
    const step = m * pow;
    const n = Math.max(1, Math.ceil(max / step - 1e-9));
    if (n > count + 3) continue;
    if (n * step < best.top - 1e-9 * step) best = { step, n, top: n * step };
  }
  const ticks: number[] = [];
  for (let i = 0; i <= best.n; i++) ticks.push(Number((i * best.step).toPrecision(12)));
  return ticks;
}

/** Formats a number with about three significant digits (1234 → "1234", 1.234 → "1.23"). */
export function formatValue(v: number): string {
  if (v === 0) return "0";
  const abs = Math.abs(v);
  if (abs >= 100) return v.toFixed(0);
  if (abs >= 10) return v.toFixed(1);
  if (abs >= 1) return v.toFixed(2);
  return v.toPrecision(2);
}

/** Renders a grouped bar chart as an SVG document (white background, system sans font). */
export function barChartSvg(o: BarChartOptions): string {
  const fmt = o.format ?? formatValue;
  const nSeries = o.series.length;
  const nGroups = Math.max(1, o.groups.length);
  const width = o.width ?? Math.max(720, 120 + nGroups * (nSeries * 58 + 50));
  const height = o.height ?? 460;
  const notes = o.footnote ? o.footnote.split("\n") : [];
  const m = { top: o.subtitle ? 96 : 74, right: 24, bottom: 66 + 16 * notes.length, left: 78 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const values = o.groups.flatMap((g) => g.values).filter((v): v is number => v !== null);
  const ticks = niceTicks(Math.max(0, ...values) * 1.08);
  const yMax = ticks[ticks.length - 1];
  const y = (v: number) => m.top + plotH - (v / yMax) * plotH;
  const colors = o.series.map((s, i) => s.color ?? PALETTE[i % PALETTE.length]);
  const font = `font-family="DejaVu Sans, Helvetica, Arial, sans-serif"`;
  const out: string[] = [];
  const add = (s: string) => out.push(s);

  add(`<?xml version="1.0" encoding="UTF-8"?>`);
  add(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
      `viewBox="0 0 ${width} ${height}" ${font} font-size="13" fill="#222">`,
  );
  add(`<rect width="100%" height="100%" fill="#fff"/>`);
  add(`<text x="${m.left}" y="30" font-size="19" font-weight="bold">${escapeXml(o.title)}</text>`);
  if (o.subtitle) {
    add(`<text x="${m.left}" y="52" font-size="12" fill="#666">${escapeXml(o.subtitle)}</text>`);
  }

  // Legend, right-aligned on the title row(s).
  const legendY = o.subtitle ? 72 : 50;
  let lx = width - m.right;
  const legend: string[] = [];
  for (let i = nSeries - 1; i >= 0; i--) {
    const name = escapeXml(o.series[i].name);
    const w = 22 + o.series[i].name.length * 7.2;
    lx -= w;
    legend.push(
      `<rect x="${lx.toFixed(1)}" y="${legendY - 10}" width="12" height="12" rx="2" ` +
        `fill="${colors[i]}"/>` +
        `<text x="${(lx + 17).toFixed(1)}" y="${legendY}" font-size="12">${name}</text>`,
    );
    lx -= 14;
  }
  add(legend.reverse().join(""));

  // Grid lines and y-axis tick labels.
  for (const t of ticks) {
    const ty = y(t).toFixed(1);
    add(
      `<line x1="${m.left}" x2="${m.left + plotW}" y1="${ty}" y2="${ty}" ` +
        `stroke="${t === 0 ? "#888" : "#e5e5e5"}" stroke-width="1"/>`,
    );
    add(
      `<text x="${m.left - 8}" y="${ty}" dy="4" text-anchor="end" font-size="12" ` +
        `fill="#555">${t}</text>`,
    );
  }
  const cy = m.top + plotH / 2;
  add(
    `<text transform="translate(20 ${cy.toFixed(1)}) rotate(-90)" text-anchor="middle" ` +
      `font-size="13" fill="#444">${escapeXml(o.yLabel)}</text>`,
  );

  if (o.groups.length === 0) {
    add(
      `<text x="${m.left + plotW / 2}" y="${cy.toFixed(1)}" text-anchor="middle" ` +
        `font-size="15" fill="#999">no data</text>`,
    );
  }

  // Bars.
  const groupW = plotW / nGroups;
  const gap = 4;
  const barW = Math.min(64, (groupW * 0.72 - gap * (nSeries - 1)) / nSeries);
  const clusterW = barW * nSeries + gap * (nSeries - 1);
  const valueFont = barW < 34 ? 10 : 12;
  o.groups.forEach((g, gi) => {
    const gx = m.left + gi * groupW;
    if (g.highlight) {
      add(
        `<rect x="${(gx + 4).toFixed(1)}" y="${m.top}" width="${(groupW - 8).toFixed(1)}" ` +
          `height="${plotH}" fill="#f3f6fb"/>`,
      );
    }
    const x0 = gx + (groupW - clusterW) / 2;
    g.values.forEach((v, si) => {
      const bx = x0 + si * (barW + gap);
      const cx = (bx + barW / 2).toFixed(1);
      if (v === null || !Number.isFinite(v)) {
        add(
          `<text x="${cx}" y="${m.top + plotH - 6}" text-anchor="middle" font-size="11" ` +
            `fill="#999">n/a</text>`,
        );
        return;
      }
      const top = y(v);
      const h = Math.max(0.5, m.top + plotH - top);
      add(
        `<rect x="${bx.toFixed(1)}" y="${top.toFixed(1)}" width="${barW.toFixed(1)}" ` +
          `height="${h.toFixed(1)}" rx="2" fill="${colors[si]}">` +
          `<title>${escapeXml(`${g.label}, ${o.series[si].name}: ${fmt(v)}`)}</title></rect>`,
      );
      add(
        `<text x="${cx}" y="${(top - 5).toFixed(1)}" text-anchor="middle" ` +
          `font-size="${valueFont}" fill="#333">${escapeXml(fmt(v))}</text>`,
      );
    });
    const lx = (gx + groupW / 2).toFixed(1);
    const ly = m.top + plotH + 20;
    add(
      `<text x="${lx}" y="${ly}" text-anchor="middle" font-size="13"` +
        `${g.highlight ? ` font-weight="bold"` : ""}>${escapeXml(g.label)}</text>`,
    );
    if (g.sublabel) {
      add(
        `<text x="${lx}" y="${ly + 17}" text-anchor="middle" font-size="11" fill="#777">` +
          `${escapeXml(g.sublabel)}</text>`,
      );
    }
  });

  notes.forEach((line, i) => {
    const ly = height - 14 - 15 * (notes.length - 1 - i);
    add(`<text x="${m.left}" y="${ly}" font-size="11" fill="#888">${escapeXml(line)}</text>`);
  });
  add(`</svg>`);
  return out.join("\n") + "\n";
}

/**
 * Stacks standalone SVG documents (e.g. two {@link barChartSvg} charts with different
 * scales) top to bottom into one document, each keeping its own size.
 */
export function stackSvgs(docs: string[]): string {
  let y = 0;
  let width = 0;
  const parts: string[] = [];
  for (const doc of docs) {
    const body = doc.replace(/^<\?xml[^>]*>\s*/, "").trim();
    const root = body.match(/^<svg\b[^>]*>/);
    const w = Number(root?.[0].match(/\bwidth="([\d.]+)"/)?.[1]);
    const h = Number(root?.[0].match(/\bheight="([\d.]+)"/)?.[1]);
    if (!root || !(w > 0) || !(h > 0)) throw new Error("stackSvgs: an <svg> with width and height");
    parts.push(`<svg x="0" y="${y}"${body.slice(4)}`);
    y += h;
    width = Math.max(width, w);
  }
  return `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" ` +
    `viewBox="0 0 ${width} ${y}">\n<rect width="100%" height="100%" fill="#fff"/>\n` +
    parts.join("\n") + `\n</svg>\n`;
}
