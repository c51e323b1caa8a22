/**
 * `hipattn bench attention` and `hipattn bench model`: GPU benchmarks that print a table and
 * write JSON. `--peer sdpa` runs PyTorch's scaled_dot_product_attention on the same shapes in
 * the same run (bench/sdpa_baseline.py; Python is only the baseline, never the product).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type Command, Option } from 'commander';
import { HipAttnError } from '../errors.js';
import type { AttentionMethod } from '../attention/method.js';
import { type AttentionBenchRow, type BenchMode, runAttentionBenchmark } from '../bench/attention.js';
import { type ModelBenchRow, runModelBenchmark } from '../bench/model.js';
import { acquireGpu, summaryLine } from '../gpu/index.js';
import { addAttentionOptions, attentionConfigFrom, intArg, intListArg, methodListArg } from './attention-options.js';
import { packageRoot } from './paths.js';
import { formatTable } from './table.js';

const run = promisify(execFile);

interface PeerRow {
  method: string;
  mode: BenchMode;
  T: number;
  ms?: number;
  tflops?: number;
  error?: string;
}

async function gitCommit(): Promise<string> {
  try {
    return (await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: packageRoot() })).stdout.trim();
  } catch {
    return 'unknown';
  }
}

async function sdpaPeer(seqLens: number[], heads: number, kvHeads: number, headDim: number, modes: BenchMode[]): Promise<{ rows: PeerRow[]; info: Record<string, unknown> } | { error: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'hipattn-sdpa-'));
  const json = join(dir, 'sdpa.json');
  const script = join(packageRoot(), 'bench', 'sdpa_baseline.py');
  try {
    await run('python3', [script, '--seq-lens', seqLens.join(','), '--heads', String(heads), '--kv-heads', String(kvHeads), '--head-dim', String(headDim), '--modes', modes.join(','), '--json', json], {
      maxBuffer: 1 << 24,
      timeout: 20 * 60_000,
    });
    const info = JSON.parse(await readFile(json, 'utf8')) as Record<string, unknown> & { rows: PeerRow[] };
    return { rows: info.rows, info };
  } catch (e) {
    return { error: e instanceof Error ? e.message.split('\n')[0]! : String(e) };
  }
}

interface TransformersPeerRow {
  context: number;
  prefillSeconds: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  memoryBytes: number;
}

/** `bench model --peer transformers`: the same shapes in PyTorch + transformers (bench/transformers_baseline.py). */
async function transformersPeer(model: string, contexts: number[], decodeTokens: number): Promise<{ rows: TransformersPeerRow[]; info: Record<string, unknown> } | { error: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'hipattn-transformers-'));
  const json = join(dir, 'transformers.json');
  const script = join(packageRoot(), 'bench', 'transformers_baseline.py');
  try {
    await run('python3', [script, '--model', model, '--contexts', contexts.join(','), '--decode-tokens', String(decodeTokens), '--json', json], { maxBuffer: 1 << 24, timeout: 20 * 60_000 });
    const info = JSON.parse(await readFile(json, 'utf8')) as Record<string, unknown> & { rows: TransformersPeerRow[] };
    return { rows: info.rows, info };
  } catch (e) {
    return { error: e instanceof Error ? e.message.split('\n')[0]! : String(e) };
  }
}

const fmtMs = (ms: number | undefined) => (ms === undefined || !Number.isFinite(ms) ? '—' : ms >= 100 ? ms.toFixed(0) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3));

function attentionTable(rows: AttentionBenchRow[], peer: PeerRow[]): string {
  const peerMs = (name: string, r: AttentionBenchRow) => peer.find((p) => p.method === name && p.mode === r.mode && p.T === r.T)?.ms;
  return formatTable(
    ['T', 'mode', 'method', 'ms / layer', 'HiP mask ms', 'HiP attention ms', 'TFLOP/s', 'GB/s', 'SDPA default ms', 'speed-up vs SDPA default', 'SDPA flash ms', 'speed-up vs SDPA flash', 'kernels'],
    rows.map((r) => {
      const pd = peerMs('sdpa-default', r);
      const pf = peerMs('sdpa-flash', r);
      const ratio = (p: number | undefined) => (p && Number.isFinite(r.ms) ? `${(p / r.ms).toFixed(2)}x` : '—');
      return [
        r.T,
        r.mode,
        r.method,
        r.error ? `error: ${r.error}` : fmtMs(r.ms),
        fmtMs(r.maskMs),
        fmtMs(r.attentionMs),
        r.tflops ? r.tflops.toFixed(1) : '—',
        r.gbps ? r.gbps.toFixed(0) : '—',
        fmtMs(pd),
        ratio(pd),
        fmtMs(pf),
        ratio(pf),
        r.path,
      ];
    }),
  );
}

export function registerBench(program: Command): void {
  const bench = program.command('bench').description('GPU benchmarks (tables + JSON)');

  const att = bench
    .command('attention')
    .description('attention per layer on the GPU: dense vs HiP vs StreamingLLM, prefill and decode')
    .option('--seq-lens <list>', 'context lengths', intListArg('--seq-lens'), [4096, 8192, 16384, 32768, 65536, 131072])
    .option('--hip-seq-lens <list>', 'extra lengths for HiP only', intListArg('--hip-seq-lens'), [])
    .option('--methods <list>', 'dense,hip,streaming', methodListArg, ['dense', 'hip', 'streaming'])
    .option('--modes <list>', 'prefill,decode', (v: string) => v.split(',').map((m) => {
      if (m !== 'prefill' && m !== 'decode') throw new HipAttnError('INVALID_OPTION', `--modes takes prefill,decode, got "${m}"`);
      return m as BenchMode;
    }), ['prefill', 'decode'] as BenchMode[])
    .option('--heads <n>', 'query heads', intArg('--heads'), 32)
    .option('--kv-heads <n>', 'KV heads', intArg('--kv-heads'), 8)
    .option('--head-dim <n>', 'head dimension', intArg('--head-dim'), 128)
    .addOption(new Option('--dtype <type>', 'storage type').choices(['f16', 'f32']).default('f16'))
    .addOption(new Option('--peer <name>', 'peer baseline run in the same process: PyTorch SDPA (needs python3 + torch + CUDA)').choices(['sdpa', 'none']).default('none'))
    .option('--json <file>', 'write the results as JSON')
    .option('--markdown <file>', 'write the table as Markdown');
  addAttentionOptions(att, false);
  att.action(async (opts: Record<string, unknown>) => {
    const gpu = await acquireGpu();
    try {
      const seqLens = opts.seqLens as number[];
      const modes = opts.modes as BenchMode[];
      const heads = opts.heads as number;
      const kvHeads = opts.kvHeads as number;
      const headDim = opts.headDim as number;
      const cfg = attentionConfigFrom(opts, 'hip');
      console.error(`GPU: ${summaryLine(gpu.adapterInfo)}; H=${heads}, H_kv=${kvHeads}, d=${headDim}, ${opts.dtype as string}; timing: ${gpu.features.timestampQuery ? 'GPU timestamps' : 'wall clock'}`);
      let peer: PeerRow[] = [];
      let peerInfo: Record<string, unknown> | undefined;
      if (opts.peer === 'sdpa') {
        console.error('running the PyTorch SDPA peer baseline…');
        const p = await sdpaPeer(seqLens, heads, kvHeads, headDim, modes);
        if ('error' in p) console.error(`SDPA peer baseline failed: ${p.error}`);
        else {
          peer = p.rows;
          peerInfo = p.info;
        }
      }
      const rows = await runAttentionBenchmark(
        gpu,
        {
          seqLens,
          hipOnlySeqLens: opts.hipSeqLens as number[],
          methods: opts.methods as AttentionMethod[],
          modes,
          heads,
          kvHeads,
          headDim,
          dtype: opts.dtype as 'f16' | 'f32',
          hip: cfg.hip,
          streaming: cfg.streaming,
        },
        (r) => console.error(`  T=${r.T} ${r.mode} ${r.method}: ${r.error ? `error: ${r.error}` : `${fmtMs(r.ms)} ms`}`),
      );
      const table = attentionTable(rows, peer);
      console.log(table);
      const result = { date: new Date().toISOString(), commit: await gitCommit(), gpu: gpu.adapterInfo, heads, kvHeads, headDim, dtype: opts.dtype, hip: cfg.hip, streaming: cfg.streaming, rows, peer: { info: peerInfo, rows: peer } };
      if (opts.json) await writeFile(opts.json as string, JSON.stringify(result, null, 2));
      if (opts.markdown) await writeFile(opts.markdown as string, `${table}\n`);
    } finally {
      gpu.destroy();
    }
  });

  const model = bench
    .command('model')
    .description('whole-model prefill and decode tokens/s on the GPU, per context and attention method')
    .option('--model <path|id|llama3-8b>', 'a model directory / GGUF / Hub id, or llama3-8b (random weights, Llama-3-8B shapes)', 'llama3-8b')
    .option('--contexts <list>', 'context lengths', intListArg('--contexts'), [8192, 32768])
    .option('--attention <list>', 'methods', methodListArg, ['dense', 'hip'])
    .option('--decode-tokens <n>', 'tokens decoded after each prefill', intArg('--decode-tokens'), 32)
    .option('--prefill-chunk <n>', 'prefill chunk in tokens', intArg('--prefill-chunk'), 2048)
    .addOption(new Option('--peer <name>', 'peer baseline run in the same process: Hugging Face transformers on PyTorch (needs python3 + torch + transformers + CUDA)').choices(['transformers', 'none']).default('none'))
    .option('--json <file>', 'write the results as JSON')
    .option('--markdown <file>', 'write the table as Markdown');
  addAttentionOptions(model, false);
  model.action(async (opts: Record<string, unknown>) => {
    const gpu = await acquireGpu();
    try {
      const cfg = attentionConfigFrom(opts, 'hip');
      console.error(`GPU: ${summaryLine(gpu.adapterInfo)}; model ${opts.model as string}`);
      const rows: ModelBenchRow[] = await runModelBenchmark(
        gpu,
        {
          model: opts.model as string,
          contexts: opts.contexts as number[],
          methods: opts.attention as AttentionMethod[],
          decodeTokens: opts.decodeTokens as number,
          prefillChunk: opts.prefillChunk as number,
          attention: { hip: cfg.hip, streaming: cfg.streaming },
        },
        (r) => console.error(`  ${r.method} @ ${r.context}: ${r.error ? `error: ${r.error}` : `prefill ${r.prefillTokensPerSecond.toFixed(0)} tok/s, decode ${r.decodeTokensPerSecond.toFixed(1)} tok/s`}`),
      );
      let peer: TransformersPeerRow[] = [];
      let peerInfo: Record<string, unknown> | undefined;
      if (opts.peer === 'transformers') {
        // The GPU is shared: hipattn's models are disposed by now.
        console.error('running the transformers peer baseline…');
        const p = await transformersPeer(opts.model as string, opts.contexts as number[], opts.decodeTokens as number);
        if ('error' in p) console.error(`transformers peer baseline failed: ${p.error}`);
        else {
          peer = p.rows;
          peerInfo = p.info;
        }
      }
      const peerOf = (context: number) => peer.find((p) => p.context === context);
      const ratio = (ours: number, theirs: number | undefined) => (theirs === undefined || !(theirs > 0) ? '—' : `${(ours / theirs).toFixed(2)}x`);
      const peerName = peerInfo ? `transformers ${String(peerInfo.transformers)} (bf16, SDPA)` : '';
      const table = formatTable(
        ['model', 'context', 'attention', 'prefill (s)', 'prefill tok/s', 'decode tok/s', 'GPU memory (GiB)', ...(peer.length ? ['prefill vs transformers', 'decode vs transformers'] : [])],
        [
          ...rows.map((r) => [
            r.model,
            r.context,
            r.method,
            r.error ? `error: ${r.error}` : r.prefillSeconds.toFixed(2),
            r.prefillTokensPerSecond.toFixed(0),
            r.decodeTokensPerSecond.toFixed(1),
            (r.memoryBytes / 2 ** 30).toFixed(2),
            ...(peer.length ? [ratio(r.prefillTokensPerSecond, peerOf(r.context)?.prefillTokensPerSecond), ratio(r.decodeTokensPerSecond, peerOf(r.context)?.decodeTokensPerSecond)] : []),
          ]),
          ...peer.map((p) => [opts.model as string, p.context, peerName, p.prefillSeconds.toFixed(2), p.prefillTokensPerSecond.toFixed(0), p.decodeTokensPerSecond.toFixed(1), (p.memoryBytes / 2 ** 30).toFixed(2), '1.00x', '1.00x']),
        ],
      );
      console.log(table);
      if (opts.json) await writeFile(opts.json as string, JSON.stringify({ date: new Date().toISOString(), commit: await gitCommit(), gpu: gpu.adapterInfo, rows, peer: { info: peerInfo, rows: peer } }, null, 2));
      if (opts.markdown) await writeFile(opts.markdown as string, `${table}\n`);
    } finally {
      gpu.destroy();
    }
  });
}
