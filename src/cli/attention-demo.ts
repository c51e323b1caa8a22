/**
 * `hipattn attention-demo`: dense vs HiP vs StreamingLLM on a synthetic long sequence with
 * planted far keys (src/attention/synthetic.ts). Shows that HiP finds what matters far back in
 * the context at a fraction of dense attention's cost, where a sliding window cannot.
 */
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { denseAttention } from '../attention/cpu/dense.js';
import { hipAttention } from '../attention/cpu/hip.js';
import { streamingAttention } from '../attention/cpu/streaming.js';
import { streamingKeys } from '../attention/keys.js';
import { selectedBlocks } from '../attention/mask.js';
import { type AttentionConfig, resolveAttentionConfig } from '../attention/method.js';
import { plantedKeysProblem, plantedRecall } from '../attention/synthetic.js';
import { Rng, freshSeed } from '../util/rng.js';
import { addAttentionOptions, attentionConfigFrom, intArg } from './attention-options.js';
import { progressBar } from './progress.js';
import { formatTable } from './table.js';

export interface AttentionDemoSpec {
  length: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  seed: number;
  /** HiP and StreamingLLM options (method field ignored). */
  attention?: AttentionConfig;
}

export interface AttentionDemoRow {
  method: 'dense' | 'hip' | 'streaming';
  seconds: number;
  /** Fraction of planted far keys the method reads. */
  plantedRecall: number;
  /** ‖out − dense‖ / ‖dense‖ over the query blocks with planted keys, and over all queries. */
  errorPlanted: number;
  errorAll: number;
  /** Keys read per query, on average. */
  keysPerQuery: number;
}

function relError(a: Float32Array, b: Float32Array, rows?: (row: number) => boolean, d = 1): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    if (rows && !rows(Math.floor(i / d))) continue;
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

export async function runAttentionDemo(spec: AttentionDemoSpec, onProgress?: (method: string, fraction: number) => void): Promise<{ rows: AttentionDemoRow[]; plantedKeys: number; minDistance: number }> {
  const cfg = resolveAttentionConfig({ ...spec.attention, method: 'hip' });
  const minDistance = Math.max(768, cfg.streaming.slidingWindow, cfg.hip.slidingWindow);
  const { input, planted } = plantedKeysProblem(new Rng(spec.seed), {
    length: spec.length,
    heads: spec.heads,
    kvHeads: spec.kvHeads,
    headDim: spec.headDim,
    hip: cfg.hip,
    minDistance,
  });
  const T = spec.length;
  const d = spec.headDim;
  const bq = cfg.hip.blockSizeQ;
  const plantedRows = new Set(planted.map((p) => p.head * Math.ceil(T / bq) + p.queryBlock));
  const isPlantedRow = (row: number) => {
    const h = Math.floor(row / T);
    return plantedRows.has(h * Math.ceil(T / bq) + Math.floor((row % T) / bq));
  };
  const time = <R>(f: () => R): [R, number] => {
    const t0 = performance.now();
    const r = f();
    return [r, (performance.now() - t0) / 1000];
  };
  const tick = async () => new Promise((r) => setImmediate(r));

  await tick();
  const [dense, denseS] = time(() => denseAttention(input, { onProgress: (f) => onProgress?.('dense', f) }));
  await tick();
  const [hip, hipS] = time(() => hipAttention(input, cfg.hip, { onProgress: (f) => onProgress?.('hip', f) }));
  await tick();
  const [streaming, streamingS] = time(() => streamingAttention(input, cfg.streaming, { onProgress: (f) => onProgress?.('streaming', f) }));

  const o = cfg.hip;
  const keys = new Int32Array(T);
  const hipRecall = plantedRecall(planted, (p) => selectedBlocks(hip.mask, 0, p.head, p.queryBlock).some((s) => p.position >= s && p.position < s + o.blockSizeK));
  const streamingRecall = plantedRecall(planted, (p) => {
    const pos = Math.min((p.queryBlock + 1) * bq, T) - 1;
    const n = streamingKeys(pos, cfg.streaming.sinkTokens, cfg.streaming.slidingWindow, keys);
    return keys.subarray(0, n).includes(p.position);
  });
  const meanKeys = (perQuery: (p: number) => number) => {
    let s = 0;
    for (let p = 0; p < T; p++) s += perQuery(p);
    return s / T;
  };
  let hipKeys = 0;
  for (let h = 0; h < spec.heads; h++)
    for (let qb = 0; qb < hip.mask.numQueryBlocks; qb++) {
      const blocks = selectedBlocks(hip.mask, 0, h, qb).length * o.blockSizeK;
      for (let i = qb * bq; i < Math.min(T, qb * bq + bq); i++) hipKeys += Math.min(i + 1, o.sinkTokens + o.slidingWindow + blocks);
    }
  const rows: AttentionDemoRow[] = [
    { method: 'dense', seconds: denseS, plantedRecall: 1, errorPlanted: 0, errorAll: 0, keysPerQuery: meanKeys((p) => p + 1) },
    {
      method: 'hip',
      seconds: hipS,
      plantedRecall: hipRecall,
      errorPlanted: relError(hip.output, dense, isPlantedRow, d),
      errorAll: relError(hip.output, dense),
      keysPerQuery: hipKeys / (T * spec.heads),
    },
    {
      method: 'streaming',
      seconds: streamingS,
      plantedRecall: streamingRecall,
      errorPlanted: relError(streaming, dense, isPlantedRow, d),
      errorAll: relError(streaming, dense),
      keysPerQuery: meanKeys((p) => Math.min(p + 1, cfg.streaming.sinkTokens + cfg.streaming.slidingWindow)),
    },
  ];
  return { rows, plantedKeys: planted.length, minDistance };
}

export function registerAttentionDemo(program: Command): void {
  const cmd = program
    .command('attention-demo')
    .description('dense vs HiP vs StreamingLLM on a synthetic long sequence with planted far keys (CPU)')
    .option('--length <tokens>', 'sequence length', intArg('--length'), 8192)
    .option('--heads <n>', 'query heads', intArg('--heads'), 4)
    .option('--kv-heads <n>', 'key/value heads', intArg('--kv-heads'), 2)
    .option('--head-dim <n>', 'head dimension', intArg('--head-dim'), 64)
    .option('--seed <n>', 'random seed (default: fresh, printed)', intArg('--seed'))
    .option('--json <file>', 'also write the results as JSON');
  addAttentionOptions(cmd, false);
  cmd.action(async (opts: Record<string, unknown>) => {
    const seed = (opts.seed as number | undefined) ?? freshSeed();
    const spec: AttentionDemoSpec = {
      length: opts.length as number,
      heads: opts.heads as number,
      kvHeads: opts.kvHeads as number,
      headDim: opts.headDim as number,
      seed,
      attention: attentionConfigFrom(opts, 'hip'),
    };
    console.error(`attention demo: T=${spec.length}, heads ${spec.heads}, KV heads ${spec.kvHeads}, head dim ${spec.headDim}, seed ${seed}`);
    const bars = new Map<string, ReturnType<typeof progressBar>>();
    const { rows, plantedKeys, minDistance } = await runAttentionDemo(spec, (method, f) => {
      let bar = bars.get(method);
      if (!bar) {
        for (const b of bars.values()) b.stop();
        bar = progressBar(method);
        bars.set(method, bar);
      }
      bar.update(f, method);
    });
    for (const b of bars.values()) b.stop();
    const dense = rows[0]!.seconds;
    console.log(`${plantedKeys} planted keys, each at least ${minDistance} tokens behind its queries (outside both windows)\n`);
    console.log(
      formatTable(
        ['method', 'time (s)', 'vs dense', 'keys/query', 'planted keys found', 'error vs dense (planted blocks)', 'error vs dense (all)'],
        rows.map((r) => [
          r.method,
          r.seconds.toFixed(2),
          `${(dense / r.seconds).toFixed(1)}x`,
          r.keysPerQuery.toFixed(0),
          `${(100 * r.plantedRecall).toFixed(1)} %`,
          r.errorPlanted.toExponential(2),
          r.errorAll.toExponential(2),
        ]),
      ),
    );
    if (opts.json) await writeFile(opts.json as string, JSON.stringify({ spec, plantedKeys, rows }, null, 2));
  });
}
