import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { perplexityChartSpec, renderSvg, retrievalChartSpec, shorten, svgToPng, writeChart } from './charts.js';
import type { PerplexityRow, RetrievalRow } from './metrics.js';

const retrieval: RetrievalRow[] = [];
for (const attention of ['dense', 'hip', 'streaming'])
  for (const length of [4096, 8192])
    for (const depth of [0, 0.5, 1]) {
      const correct = attention === 'streaming' && depth === 0.5 ? 0 : 2;
      retrieval.push({ length, depth, attention, trials: 2, correct, accuracy: correct / 2 });
    }
const ppl: PerplexityRow[] = [];
for (const attention of ['dense', 'hip', 'streaming'])
  for (const file of ['a.txt', 'b.txt'])
    for (const context of [1024, 2048, 4096]) ppl.push({ file, context, attention, tokens: 4096, nll: 3.7, ppl: 40 + (attention === 'streaming' ? context / 1024 : 0) });

describe('charts', () => {
  it('retrieval heatmaps: one panel per method, titles, axes, 0–100 % legend, cell labels', async () => {
    const spec = retrievalChartSpec(retrieval, { task: 'passkey' });
    const color = JSON.stringify(spec);
    expect(color).toContain('"domain":[0,1]');
    const svg = await renderSvg(spec);
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trim().endsWith('</svg>')).toBe(true);
    for (const s of ['passkey accuracy by context length and needle depth', 'dense (mean 100%)', 'HiP (mean 100%)', 'StreamingLLM (mean 67%)', 'needle depth', 'context length (tokens)', 'accuracy', '0%', '100%', '8192', '50%']) {
      expect(svg).toContain(s);
    }
  });

  it('retrieval: a note line per panel (time, keys read) and a subtitle of several lines', async () => {
    const notes = { dense: '80.1 s · 8192 keys/query at 8192', hip: '40.2 s · 1296 keys/query at 8192', streaming: '30.9 s · 784 keys/query at 8192' };
    const subtitle = ['hip-testbed-mini on WebGPU "mesa / software / llvmpipe / Mesa 25.0.7 (LLVM 15.0.6)" (fallback), f16', '2 trials per cell'];
    const svg = await renderSvg(retrievalChartSpec(retrieval, { task: 'passkey', subtitle, methodNotes: notes }));
    for (const s of [...Object.values(notes), ...subtitle.map((l) => l.replace(/"/g, '&quot;')), 'HiP (mean 100%)']) expect(svg).toContain(s);
    expect(svg).not.toMatch(/>[^<]* \| [^<]*</); // the line separator is never drawn
    // one text element per line: the note is not glued to the method's title
    expect(svg).toMatch(/>HiP \(mean 100%\)</);
  });

  it("a long adapter name does not make the chart wide (it made hipattn demo's 2056 px)", async () => {
    const device = 'WebGPU "mesa / software / llvmpipe-llvm-15-0-6-256-bits- / llvmpipe: Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6) 0.0.1" (fallback), f16; HiP options: topK 512, blockSizeQ 32';
    const width = async (subtitle: string | string[]) => Number(/^<svg[^>]* width="(\d+)"/.exec(await renderSvg(retrievalChartSpec(retrieval, { task: 'passkey', subtitle })))![1]);
    const panels = await width('x');
    const long = await width(`hip-testbed-mini on ${device}; 2 trials per cell; depth 0% = start of the context, 100% = just before the question`);
    const short = await width([`hip-testbed-mini on ${shorten(device)}`, '2 trials per cell; depth 0% = start of the context, 100% = just before the question']);
    expect(shorten(device)).toHaveLength(72);
    expect(shorten('short')).toBe('short');
    expect(long).toBeGreaterThan(panels + 300);
    expect(short).toBe(panels);
  });

  it('perplexity: ppl vs context, one line per method, one panel per file', async () => {
    const svg = await renderSvg(perplexityChartSpec(ppl));
    for (const s of ['Perplexity vs context length', 'a.txt', 'b.txt', 'dense', 'HiP', 'StreamingLLM', 'perplexity', 'context length (tokens)', '2048']) expect(svg).toContain(s);
    expect((svg.match(/<path[^>]*aria-roledescription="line mark"/g) ?? []).length).toBeGreaterThanOrEqual(6);
  });

  it('writes .svg and .png files, refuses other extensions', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hipattn-chart-'));
    await writeChart(retrievalChartSpec(retrieval), join(dir, 'sub', 'c.svg'));
    expect((await readFile(join(dir, 'sub', 'c.svg'), 'utf8')).startsWith('<svg')).toBe(true);
    await writeChart(retrievalChartSpec(retrieval), join(dir, 'c.png'));
    const png = await readFile(join(dir, 'c.png'));
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(png.length).toBeGreaterThan(5000);
    await expect(writeChart(retrievalChartSpec(retrieval), join(dir, 'c.jpg'))).rejects.toThrow(/must end in .svg or .png/);
    const small = await svgToPng('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="red"/></svg>', 1);
    expect(small[1]).toBe(0x50);
  });
});
