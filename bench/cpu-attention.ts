/**
 * `npm run bench:cpu`: CPU time of dense vs HiP attention (HIP.md defaults) for growing T.
 * Prints a Markdown table, writes JSON (bench/results/cpu-attention.json) and updates the
 * CPU section of BENCHMARKS.md.
 *
 * Dense attention costs Θ(T²) and JavaScript is slow, so above --dense-full-max tokens its time
 * is measured on evenly spaced 64-query chunks (about 1/--dense-sample of the queries) and
 * scaled by the exact number of q·k products (a dense query at position p reads p + 1 keys), and
 * the table says so. HiP is always measured in full.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { denseAttention } from '../src/attention/cpu/dense.js';
import { estimateHipMask } from '../src/attention/cpu/hip-mask.js';
import { hipSparseAttention } from '../src/attention/cpu/hip.js';
import { HIP_DEFAULTS } from '../src/attention/options.js';
import { localityProblem } from '../src/attention/synthetic.js';
import { intArg, intListArg } from '../src/cli/attention-options.js';
import { packageRoot } from '../src/cli/paths.js';
import { formatTable } from '../src/cli/table.js';
import { Rng, freshSeed } from '../src/util/rng.js';

interface Row {
  T: number;
  denseSeconds: number;
  denseSampledFraction: number;
  hipMaskSeconds: number;
  hipSparseSeconds: number;
  hipSeconds: number;
  speedup: number;
  denseProducts: number;
  hipMaskProducts: number;
  hipAttendProducts: number;
}

function seconds(f: () => void): number {
  const t0 = performance.now();
  f();
  return (performance.now() - t0) / 1000;
}

const program = new Command()
  .option('--seq-lens <list>', 'sequence lengths', intListArg('--seq-lens'), [4096, 8192, 16384, 32768, 65536])
  .option('--heads <n>', 'query heads', intArg('--heads'), 8)
  .option('--kv-heads <n>', 'KV heads', intArg('--kv-heads'), 2)
  .option('--head-dim <n>', 'head dimension', intArg('--head-dim'), 64)
  .option('--dense-full-max <T>', 'measure dense in full up to this length', intArg('--dense-full-max'), 16384)
  .option('--dense-sample <n>', 'above it, time about 1/n of the queries', intArg('--dense-sample'), 16)
  .option('--seed <n>', 'random seed', intArg('--seed'))
  .option('--json <file>', 'JSON output', join(packageRoot(), 'bench', 'results', 'cpu-attention.json'))
  .option('--no-update-benchmarks', 'do not rewrite the CPU section of BENCHMARKS.md')
  .parse();
const opts = program.opts();
const seed: number = opts.seed ?? freshSeed();
const { heads, kvHeads, headDim } = opts as { heads: number; kvHeads: number; headDim: number };
const rows: Row[] = [];
console.error(`CPU attention benchmark: H=${heads}, H_kv=${kvHeads}, d=${headDim}, HiP defaults (k=${HIP_DEFAULTS.topK}, b_q=${HIP_DEFAULTS.blockSizeQ}, b_k=${HIP_DEFAULTS.blockSizeK}), seed ${seed}`);
for (const T of opts.seqLens as number[]) {
  const input = localityProblem(new Rng(seed + T), { length: T, heads, kvHeads, headDim });
  const run = { checkFinite: false };
  // HiP, in full: mask estimation, then sparse attention
  let mask!: ReturnType<typeof estimateHipMask>;
  const hipMaskSeconds = seconds(() => (mask = estimateHipMask(input, {}, run)));
  const hipSparseSeconds = seconds(() => hipSparseAttention(input, mask, run));
  let hipAttendProducts = 0;
  const window = HIP_DEFAULTS.slidingWindow + HIP_DEFAULTS.sinkTokens;
  for (let s = 0; s < mask.blockStarts.length; s += mask.blocksPerQuery) {
    let sel = 0;
    for (let j = 0; j < mask.blocksPerQuery && mask.blockStarts[s + j]! >= 0; j++) sel++;
    const qb = (s / mask.blocksPerQuery) % mask.numQueryBlocks;
    for (let i = qb * 64; i < Math.min(T, qb * 64 + 64); i++) hipAttendProducts += Math.min(i + 1, window + sel * HIP_DEFAULTS.blockSizeK);
  }
  // Dense: in full, or on evenly spaced 64-query chunks scaled by exact work
  const denseProducts = (heads * T * (T + 1)) / 2;
  let denseSeconds: number;
  let denseSampledFraction = 1;
  if (T <= opts.denseFullMax) {
    denseSeconds = seconds(() => denseAttention(input, run));
  } else {
    const chunk = 64;
    const every = opts.denseSample as number;
    let sampledProducts = 0;
    let sampledSeconds = 0;
    for (let start = Math.floor((every * chunk) / 2); start + chunk <= T; start += every * chunk) {
      const q = new Float32Array(heads * chunk * headDim);
      for (let h = 0; h < heads; h++) q.set(input.q.subarray((h * T + start) * headDim, (h * T + start + chunk) * headDim), h * chunk * headDim);
      const shape = { ...input.shape, queryLength: chunk, queryOffset: start };
      sampledSeconds += seconds(() => denseAttention({ q, k: input.k, v: input.v, shape }, run));
      for (let i = 0; i < chunk; i++) sampledProducts += heads * (start + i + 1);
    }
    denseSampledFraction = sampledProducts / denseProducts;
    denseSeconds = (sampledSeconds * denseProducts) / sampledProducts;
  }
  const hipSeconds = hipMaskSeconds + hipSparseSeconds;
  const row: Row = {
    T,
    denseSeconds,
    denseSampledFraction,
    hipMaskSeconds,
    hipSparseSeconds,
    hipSeconds,
    speedup: denseSeconds / hipSeconds,
    denseProducts,
    hipMaskProducts: mask.qkProducts,
    hipAttendProducts,
  };
  rows.push(row);
  console.error(`T=${T}: dense ${denseSeconds.toFixed(1)} s${denseSampledFraction < 1 ? ' (sampled)' : ''}, HiP ${hipSeconds.toFixed(1)} s`);
}

const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const table = formatTable(
  ['T', 'dense (s)', 'HiP (s)', 'HiP mask (s)', 'HiP sparse attn (s)', 'speedup', 'dense q·k', 'HiP q·k (mask + attn)', 'dense growth', 'HiP growth'],
  rows.map((r, i) => {
    const prev = rows[i - 1];
    const growth = (a: number, b: number | undefined) => (b ? `${(a / b).toFixed(2)}x` : '—');
    return [
      r.T,
      `${fmt(r.denseSeconds)}${r.denseSampledFraction < 1 ? ` (est., ${(100 * r.denseSampledFraction).toFixed(0)} % sampled)` : ''}`,
      fmt(r.hipSeconds),
      fmt(r.hipMaskSeconds),
      fmt(r.hipSparseSeconds),
      `${r.speedup.toFixed(1)}x`,
      r.denseProducts.toExponential(2),
      (r.hipMaskProducts * 1 + r.hipAttendProducts).toExponential(2),
      growth(r.denseSeconds, prev?.denseSeconds),
      growth(r.hipSeconds, prev?.hipSeconds),
    ];
  }),
);
const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
const header = `H=${heads}, H_kv=${kvHeads}, d=${headDim}, HiP defaults (${HIP_DEFAULTS.representativeBlocks} representative block(s) per half); inputs: smooth random-walk keys (src/attention/synthetic.ts localityProblem), seed ${seed}. Machine: ${machine}. Date: ${new Date().toISOString().slice(0, 10)}.`;
console.log(`${header}\n\n${table}`);
await mkdir(join(packageRoot(), 'bench', 'results'), { recursive: true });
await writeFile(opts.json as string, JSON.stringify({ date: new Date().toISOString(), machine, seed, heads, kvHeads, headDim, hip: HIP_DEFAULTS, rows }, null, 2));
if (opts.updateBenchmarks) {
  const path = join(packageRoot(), 'BENCHMARKS.md');
  const begin = '<!-- bench:cpu:begin -->';
  const end = '<!-- bench:cpu:end -->';
  let md = await readFile(path, 'utf8').catch(() => '# Benchmarks\n');
  const section = `${begin}\n${header}\n\n${table}\n${end}`;
  md = md.includes(begin) ? md.replace(new RegExp(`${begin}[\\s\\S]*?${end}`), section) : `${md.trimEnd()}\n\n## CPU attention (npm run bench:cpu)\n\n${section}\n`;
  await writeFile(path, md);
  console.error(`updated ${path}`);
}
