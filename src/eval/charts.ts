/**
 * Charts of evaluation results: Vega-Lite specifications compiled with vega-lite and rendered by
 * vega to SVG (headless, no canvas), and to PNG by resvg (@resvg/resvg-js, a WebAssembly-free
 * native build shipped on npm for each platform; loaded only when a PNG is asked for).
 *
 * - perplexity: ppl vs context length, one line per attention method, one panel per file;
 * - retrieval (passkey, kv, niah): an accuracy heatmap (length × depth, 0–100 %) per method.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, extname } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { HipAttnError } from '../errors.js';
import type { PerplexityRow, RetrievalRow } from './metrics.js';

const METHOD_ORDER = ['dense', 'hip', 'streaming'];
const METHOD_LABEL: Record<string, string> = { dense: 'dense', hip: 'HiP', streaming: 'StreamingLLM' };
const METHOD_DASH: Record<string, number[]> = { dense: [1, 0], hip: [6, 3], streaming: [2, 2] };
const METHOD_COLOR: Record<string, string> = { dense: '#4c78a8', hip: '#e45756', streaming: '#54a24b' };

function methodsOf(rows: readonly { attention: string }[]): string[] {
  const present = [...new Set(rows.map((r) => r.attention))];
  return present.sort((a, b) => (METHOD_ORDER.indexOf(a) + 1 || 99) - (METHOD_ORDER.indexOf(b) + 1 || 99) || a.localeCompare(b));
}

/**
 * At most `max` characters (an ellipsis at the end): a subtitle line is as wide as its text,
 * and an adapter description can be 150 characters long.
 */
export function shorten(text: string, max = 72): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** Separates the lines of a panel title (split by the header's labelExpr). */
const PANEL_LINE_BREAK = ' | ';

const CONFIG = {
  font: 'DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif',
  background: 'white',
  padding: 12,
  title: { fontSize: 15, subtitleFontSize: 11, subtitleColor: '#555', anchor: 'start' as const, offset: 10 },
  axis: { labelFontSize: 11, titleFontSize: 12 },
  header: { labelFontSize: 13, titleFontSize: 13, labelFontWeight: 'bold' as const },
  legend: { labelFontSize: 11, titleFontSize: 12 },
  view: { stroke: '#ccc' },
};

/** Vega-Lite spec: perplexity vs context, one line per method, one panel per file. */
export function perplexityChartSpec(rows: readonly PerplexityRow[], opts: { title?: string; subtitle?: string } = {}): TopLevelSpec {
  const methods = methodsOf(rows);
  const files = [...new Set(rows.map((r) => r.file))];
  const data = rows.map((r) => ({ ...r, method: METHOD_LABEL[r.attention] ?? r.attention }));
  const contexts = [...new Set(rows.map((r) => r.context))].sort((a, b) => a - b);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: opts.title ?? 'Perplexity vs context length', subtitle: opts.subtitle ?? 'lower is better; non-overlapping windows, every token scored' },
    data: { values: data },
    facet: { field: 'file', type: 'nominal', title: null, sort: files },
    columns: Math.min(3, files.length),
    resolve: { scale: { y: 'independent' }, axis: { x: 'independent' } },
    spec: {
      width: 260,
      height: 200,
      layer: [
        {
          mark: { type: 'line', point: { filled: true, size: 50 }, strokeWidth: 2 },
          encoding: {
            x: {
              field: 'context',
              type: 'quantitative',
              scale: { type: 'log', base: 2, nice: false, domain: contexts.length > 1 ? [contexts[0]!, contexts[contexts.length - 1]!] : undefined },
              axis: { values: contexts, format: 'd', title: 'context length (tokens)', labelAngle: 0 },
            },
            y: { field: 'ppl', type: 'quantitative', scale: { zero: false }, axis: { title: 'perplexity', format: '.4~g' } },
            color: {
              field: 'method',
              type: 'nominal',
              title: 'attention',
              sort: methods.map((m) => METHOD_LABEL[m] ?? m),
              scale: { domain: methods.map((m) => METHOD_LABEL[m] ?? m), range: methods.map((m) => METHOD_COLOR[m] ?? '#888') },
              legend: { symbolType: 'stroke', symbolSize: 400, symbolStrokeWidth: 2.5 },
            },
            strokeDash: {
              field: 'method',
              type: 'nominal',
              title: 'attention',
              sort: methods.map((m) => METHOD_LABEL[m] ?? m),
              scale: { domain: methods.map((m) => METHOD_LABEL[m] ?? m), range: methods.map((m) => METHOD_DASH[m] ?? [1, 0]) },
            },
            tooltip: [
              { field: 'method', type: 'nominal' },
              { field: 'context', type: 'quantitative' },
              { field: 'ppl', type: 'quantitative', format: '.3f' },
              { field: 'tokens', type: 'quantitative' },
            ],
          },
        },
      ],
    },
    config: CONFIG,
  } as TopLevelSpec;
}

/** Vega-Lite spec: accuracy heatmaps (length × depth) side by side, one per method. */
export function retrievalChartSpec(
  rows: readonly RetrievalRow[],
  opts: {
    task?: string;
    title?: string;
    /** Lines under the title (an array: one line each, so long device names do not widen the chart). */
    subtitle?: string | string[];
    /** A second line under each method's panel title, e.g. its time and keys read per query. */
    methodNotes?: Readonly<Record<string, string>>;
  } = {},
): TopLevelSpec {
  const methods = methodsOf(rows);
  // Panel titles carry each method's mean accuracy over its cells (Σ correct / Σ trials).
  const title = new Map<string, string>();
  for (const m of methods) {
    const mine = rows.filter((r) => r.attention === m);
    const trials = mine.reduce((s, r) => s + r.trials, 0);
    const correct = mine.reduce((s, r) => s + r.correct, 0);
    const note = opts.methodNotes?.[m];
    title.set(m, `${METHOD_LABEL[m] ?? m} (mean ${trials > 0 ? Math.round((100 * correct) / trials) : 0}%)${note ? `${PANEL_LINE_BREAK}${note}` : ''}`);
  }
  const data = rows.map((r) => ({
    ...r,
    method: title.get(r.attention)!,
    depthLabel: `${Math.round(r.depth * 100)}%`,
    accuracyLabel: `${Math.round(r.accuracy * 100)}%`,
  }));
  const depths = [...new Set(rows.map((r) => r.depth))].sort((a, b) => a - b).map((d) => `${Math.round(d * 100)}%`);
  const lengths = [...new Set(rows.map((r) => r.length))].sort((a, b) => b - a);
  const trials = [...new Set(rows.map((r) => r.trials))];
  const task = opts.task ?? 'retrieval';
  const cell = Math.max(34, Math.min(64, Math.floor(360 / Math.max(depths.length, 1))));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: opts.title ?? `${task} accuracy by context length and needle depth`,
      subtitle: opts.subtitle ?? `${trials.length === 1 ? trials[0] : trials.join('/')} trial${trials.length === 1 && trials[0] === 1 ? '' : 's'} per cell; depth 0% = start of the context, 100% = just before the question`,
    },
    data: { values: data },
    facet: {
      field: 'method',
      type: 'nominal',
      title: null,
      sort: methods.map((m) => title.get(m)!),
      header: { labelFontSize: 13, labelExpr: `split(datum.value, '${PANEL_LINE_BREAK}')` },
    },
    columns: Math.min(3, methods.length),
    spec: {
      width: cell * depths.length,
      height: Math.max(34, cell * 0.8) * lengths.length,
      encoding: {
        x: { field: 'depthLabel', type: 'ordinal', sort: depths, axis: { title: 'needle depth', labelAngle: 0 } },
        y: { field: 'length', type: 'ordinal', sort: lengths, axis: { title: 'context length (tokens)' } },
      },
      layer: [
        {
          mark: { type: 'rect', stroke: 'white', strokeWidth: 1 },
          encoding: {
            color: {
              field: 'accuracy',
              type: 'quantitative',
              title: 'accuracy',
              scale: { domain: [0, 1], scheme: 'redyellowgreen' },
              legend: { format: '.0%', values: [0, 0.25, 0.5, 0.75, 1], gradientLength: 140 },
            },
            tooltip: [
              { field: 'method', type: 'nominal' },
              { field: 'length', type: 'ordinal' },
              { field: 'depthLabel', type: 'ordinal', title: 'depth' },
              { field: 'correct', type: 'quantitative' },
              { field: 'trials', type: 'quantitative' },
              { field: 'accuracy', type: 'quantitative', format: '.0%' },
            ],
          },
        },
        {
          mark: { type: 'text', fontSize: 12, fontWeight: 'bold' },
          encoding: {
            text: { field: 'accuracyLabel', type: 'nominal' },
            color: { condition: { test: 'datum.accuracy < 0.2 || datum.accuracy > 0.85', value: 'white' }, value: 'black' },
          },
        },
      ],
    },
    config: CONFIG,
  } as TopLevelSpec;
}

/** Compiles a Vega-Lite spec and renders it to an SVG string (headless). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const [vega, vl] = await Promise.all([import('vega'), import('vega-lite')]);
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', logLevel: vega.Warn });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Renders an SVG string to PNG bytes (resvg, system fonts, 2× scale for sharp text). */
export async function svgToPng(svg: string, scale = 2): Promise<Uint8Array> {
  let Resvg: typeof import('@resvg/resvg-js').Resvg;
  try {
    ({ Resvg } = await import('@resvg/resvg-js'));
  } catch (e) {
    throw new HipAttnError('UNSUPPORTED', `PNG output needs @resvg/resvg-js, which did not load on this platform (${(e as Error).message}); write an .svg chart instead`, { cause: e });
  }
  const r = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: scale },
    background: 'white',
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans', sansSerifFamily: 'DejaVu Sans' },
  });
  return r.render().asPng();
}

/** Writes a chart to `file`: SVG for .svg, PNG for .png (other extensions are refused). */
export async function writeChart(spec: TopLevelSpec, file: string): Promise<void> {
  const ext = extname(file).toLowerCase();
  if (ext !== '.svg' && ext !== '.png') throw new HipAttnError('INVALID_OPTION', `--chart must end in .svg or .png, got "${file}"`);
  const svg = await renderSvg(spec);
  await mkdir(dirname(file), { recursive: true });
  if (ext === '.svg') await writeFile(file, svg);
  else await writeFile(file, await svgToPng(svg));
}
