/**
 * GPU attention kernels on a real GPU (plain node, no vitest): correctness of every kernel path
 * the device supports — in particular the tensor-core (subgroup-matrix) prefill kernel, which
 * software adapters cannot run — against the CPU reference, then timings.
 *
 *   npm run build && source .gpu/enter.sh && node dist/bench/gpu-attention-check.js \
 *       [--seq-lens 4096,8192,16384,32768,65536,131072] [--methods dense,hip,streaming] \
 *       [--modes prefill,decode] [--paths mma,plain] [--skip-check] [--skip-bench] [--sweep] \
 *       [--json FILE]
 *
 * Exit code 1 when a correctness check fails. HiP timings use a SYNTHETIC mask (random valid
 * block selections; the mask estimation is timed separately by the mask kernels).
 */
import { writeFileSync } from 'node:fs';
import { acquireGpu, summaryLine, type GpuContext } from '../src/gpu/index.js';
import { createAttentionKernels, type PrefillPath } from '../src/kernels/attention/index.js';
import { runAttentionCase, type CheckCase } from '../src/kernels/attention/check.js';
import { benchAttention, type AttentionBenchResult } from '../src/kernels/attention/bench.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const flag = (name: string) => process.argv.includes(`--${name}`);
const list = (name: string, dflt: string) => (arg(name) ?? dflt).split(',').filter(Boolean);

// PyTorch SDPA on this H200 (issue 3; H=32, H_kv=8, d=128, bf16, causal): prefill ms, decode µs.
const SDPA_PREFILL_MS: Record<number, number> = { 8192: 0.89, 32768: 14.6, 131072: 253 };
const SDPA_DECODE_US: Record<number, number> = { 8192: 41, 32768: 130, 131072: 481 };
const H200_F16_TC_TFLOPS = 989; // dense f16/bf16 tensor-core peak (SXM)
const H200_HBM_GBPS = 4800;

interface CheckRow {
  path: string;
  name: string;
  maxRowRelError: number;
  ok: boolean;
}

async function checks(gpu: GpuContext, paths: PrefillPath[]): Promise<CheckRow[]> {
  const rows: CheckRow[] = [];
  const hip = { topK: 128, blockSizeQ: 64, blockSizeK: 2, sinkTokens: 16, slidingWindow: 128, refreshInterval: 8 };
  const cases: (Omit<CheckCase, 'seed'> & { name: string })[] = [];
  for (const headDim of [64, 128]) {
    const s = { batch: 2, heads: 8, kvHeads: 2, headDim };
    cases.push(
      { name: `d${headDim} dense prefill 1000 (GQA 4, model layout)`, method: 'dense', mode: 'prefill', layout: 'model', shape: { ...s, queryLength: 1000, keyLength: 1000 } },
      { name: `d${headDim} dense chunk 333 @ 1200 (offset, cap)`, method: 'dense', mode: 'prefill', layout: 'model', shape: { ...s, queryLength: 333, keyLength: 1200, keyCapacity: 1280 } },
      { name: `d${headDim} streaming prefill 1500`, method: 'streaming', mode: 'prefill', streaming: { sinkTokens: 16, slidingWindow: 200 }, shape: { ...s, queryLength: 1500, keyLength: 1500 } },
      { name: `d${headDim} hip prefill 2000 (CPU mask)`, method: 'hip', mode: 'prefill', layout: 'model', hip, shape: { ...s, heads: 8, kvHeads: 1, queryLength: 2000, keyLength: 2000 } },
      { name: `d${headDim} dense decode @ 3000`, method: 'dense', mode: 'decode', shape: { ...s, queryLength: 1, keyLength: 3000 } },
      { name: `d${headDim} hip decode @ 3000`, method: 'hip', mode: 'decode', hip, shape: { ...s, queryLength: 1, keyLength: 3000 } },
    );
  }
  for (const path of paths) {
    for (const headDim of [64, 128]) {
      const kernels = await createAttentionKernels(gpu, { dtype: 'f16', headDim, prefill: path });
      try {
        for (const c of cases.filter((x) => x.shape.headDim === headDim)) {
          if (c.mode === 'decode' && path !== paths[0]) continue; // decode does not depend on the prefill path
          const r = await runAttentionCase(gpu, kernels, { ...c, seed: 1000 + rows.length });
          const ok = r.maxRowRelError <= 2e-3;
          rows.push({ path: kernels.prefillPath, name: c.name, maxRowRelError: r.maxRowRelError, ok });
          console.log(`${ok ? 'PASS' : 'FAIL'}  [${kernels.prefillPath}] ${c.name}: max row rel err ${r.maxRowRelError.toExponential(2)} (abs/max ${r.maxAbsErrorRel.toExponential(2)})`);
        }
      } finally {
        kernels.destroy();
      }
    }
  }
  return rows;
}

interface BenchRow extends Omit<AttentionBenchResult, 'shape' | 'samples'> {
  seqLen: number;
  method: string;
  mode: string;
  config?: string;
  error?: string;
}

async function main(): Promise<void> {
  const gpu = await acquireGpu();
  const info = gpu.adapterInfo;
  console.log(`adapter: ${summaryLine(info)}`);
  console.log(`features: ${JSON.stringify(gpu.features)}`);
  console.log(`subgroup sizes ${info.subgroupMinSize}–${info.subgroupMaxSize}; subgroupMatrixConfigs ${JSON.stringify(info.subgroupMatrixConfigs)}`);
  const L = gpu.limits;
  console.log(`limits: maxStorageBufferBindingSize ${L.maxStorageBufferBindingSize}, maxBufferSize ${L.maxBufferSize}, maxComputeWorkgroupStorageSize ${L.maxComputeWorkgroupStorageSize}, maxComputeInvocationsPerWorkgroup ${L.maxComputeInvocationsPerWorkgroup}`);
  const paths = list('paths', gpu.features.subgroupMatrix ? 'mma,plain' : 'plain') as PrefillPath[];
  if (!gpu.features.subgroupMatrix) console.log('!!! no chromium-experimental-subgroup-matrix on this adapter: the tensor-core kernel cannot be checked here');
  const report: { adapter: unknown; checks?: CheckRow[]; bench?: BenchRow[] } = { adapter: info };
  let failed = false;
  if (!flag('skip-check')) {
    report.checks = await checks(gpu, paths);
    failed = report.checks.some((r) => !r.ok);
    console.log(failed ? 'CORRECTNESS: FAILED' : `CORRECTNESS: all ${report.checks.length} checks passed`);
  }
  if (!flag('skip-bench')) {
    const seqLens = list('seq-lens', '4096,8192,16384,32768,65536,131072').map(Number);
    const methods = list('methods', 'dense,hip,streaming') as ('dense' | 'hip' | 'streaming')[];
    const modes = list('modes', 'prefill,decode') as ('prefill' | 'decode')[];
    const rows: BenchRow[] = [];
    const configs: { path: PrefillPath; mma?: { warps: number; bk: number } }[] = flag('sweep')
      ? [{ path: 'mma', mma: { warps: 4, bk: 32 } }, { path: 'mma', mma: { warps: 2, bk: 32 } }, { path: 'mma', mma: { warps: 2, bk: 16 } }, { path: 'plain' }]
      : paths.map((path) => ({ path }));
    console.log('\nT        method     mode     path           ms        TFLOP/s  %TCpeak  GB/s    vs SDPA');
    for (const mode of modes)
      for (const method of methods)
        for (const cfg of mode === 'decode' ? configs.slice(0, 1) : configs)
          for (const T of seqLens) {
            if (cfg.path === 'plain' && mode === 'prefill' && method === 'dense' && T > 32768 && configs.length > 1) continue; // too slow to be useful
            const config = cfg.mma ? `mma w${cfg.mma.warps} k${cfg.mma.bk}` : cfg.path;
            try {
              const r = await benchAttention(gpu, {
                seqLen: T,
                method,
                mode,
                kernelOptions: { prefill: cfg.path, ...(cfg.mma ? { mma: cfg.mma } : {}) },
                warmup: 2,
                iterations: T >= 65536 && mode === 'prefill' ? 3 : 7,
              });
              const { shape: _s, samples: _x, ...rest } = r;
              rows.push({ seqLen: T, method, mode, config, ...rest });
              let vs = '';
              if (mode === 'prefill' && SDPA_PREFILL_MS[T]) vs = `${(SDPA_PREFILL_MS[T]! / r.ms).toFixed(2)}x (SDPA ${SDPA_PREFILL_MS[T]} ms)`;
              if (mode === 'decode' && SDPA_DECODE_US[T]) vs = `${(SDPA_DECODE_US[T]! / (r.ms * 1000)).toFixed(2)}x (SDPA ${SDPA_DECODE_US[T]} µs)`;
              console.log(
                `${String(T).padEnd(8)} ${method.padEnd(10)} ${mode.padEnd(8)} ${config.padEnd(14)} ${r.ms.toFixed(3).padStart(9)} ${r.tflops.toFixed(1).padStart(8)} ${((100 * r.tflops) / H200_F16_TC_TFLOPS).toFixed(1).padStart(7)}% ${r.gbps.toFixed(0).padStart(6)} (${((100 * r.gbps) / H200_HBM_GBPS).toFixed(0)}%)  ${vs}${r.mask ? `  [${r.mask} mask]` : ''} [${r.timing}, ${r.reps} reps/sample]`,
              );
            } catch (e) {
              const msg = e instanceof Error ? e.message : String(e);
              rows.push({ seqLen: T, method, mode, config, ms: NaN, flops: 0, bytes: 0, tflops: 0, gbps: 0, timing: 'wall-clock', reps: 0, prefillPath: cfg.path, error: msg });
              console.log(`${String(T).padEnd(8)} ${method.padEnd(10)} ${mode.padEnd(8)} ${config.padEnd(14)} ERROR ${msg.split('\n')[0]}`);
            }
          }
    report.bench = rows;
  }
  const json = arg('json');
  if (json) writeFileSync(json, JSON.stringify(report, null, 2));
  gpu.destroy();
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
