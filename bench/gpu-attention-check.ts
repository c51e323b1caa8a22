/**
 * GPU attention kernels on a real GPU (plain node, no vitest): correctness of every kernel path
 * the device supports — in particular the tensor-core (subgroup-matrix) prefill kernels, which
 * software adapters cannot run — against the CPU reference, then timings.
 *
 *   npm run build && source .gpu/enter.sh && node dist/bench/gpu-attention-check.js \
 *       [--seq-lens 4096,8192,16384,32768,65536,131072] [--methods dense,hip,streaming] \
 *       [--modes prefill,decode] [--paths mma2,mma,plain] [--skip-check] [--skip-bench] \
 *       [--json FILE] [--dawn-toggles t1,t2]
 *
 * Variant sweep (one problem per case, every kernel variant checked on small problems against
 * the CPU reference, then timed on the big one; about 2–3 minutes on an H200):
 *
 *   node dist/bench/gpu-attention-check.js --sweep [--sweep-cases dense-prefill,hip-prefill,
 *       dense-decode,hip-decode] [--sweep-only SUBSTR,…] [--sweep-no-check] [--sweep-quick]
 *       [--sweep-unsafe-too] [--json FILE]
 *
 * `--sweep-unsafe-too` re-times the two best variants of every case on a second device created
 * with Dawn's disable_robustness and disable_workgroup_init toggles (bounds clamping and
 * workgroup-memory zeroing off) to show what they cost. `--sweep-quick` uses small lengths
 * (a smoke test of the script itself, e.g. on lavapipe).
 *
 * Exit code 1 when a correctness check fails (sweep: when the check of a variant fails, the
 * variant is reported FAIL and left out of the best-of summary; the exit code stays 0).
 * HiP timings use a SYNTHETIC mask (random valid block selections; the mask estimation is timed
 * separately by the mask kernels).
 */
import { writeFileSync } from 'node:fs';
import { acquireGpu, DEFAULT_DAWN_TOGGLES, summaryLine, type GpuContext } from '../src/gpu/index.js';
import { createAttentionKernels, type AttentionKernelOptions, type DecodeOptions, type PrefillPath } from '../src/kernels/attention/index.js';
import { runAttentionCase, type CheckCase } from '../src/kernels/attention/check.js';
import { benchAttention, createAttentionBenchProblem, timeAttention, type AttentionBenchResult } from '../src/kernels/attention/bench.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const flag = (name: string) => process.argv.includes(`--${name}`);
const list = (name: string, dflt: string) => (arg(name) ?? dflt).split(',').filter(Boolean);

// PyTorch SDPA on this H200 (H=32, H_kv=8, d=128, bf16, causal). Default backend (cuDNN; issue
// 3): prefill ms, decode µs; FlashAttention backend only (bench/results/h200/sdpa-flash-only-run1.json).
const SDPA_PREFILL_MS: Record<number, number> = { 8192: 0.89, 32768: 14.6, 131072: 253 };
const SDPA_DECODE_US: Record<number, number> = { 8192: 41, 32768: 130, 131072: 481 };
const SDPA_FLASH_PREFILL_MS: Record<number, number> = { 4096: 0.52, 8192: 1.76, 16384: 6.4, 32768: 25.7, 65536: 102, 131072: 426 };
const SDPA_FLASH_DECODE_US: Record<number, number> = { 4096: 36, 8192: 41, 16384: 53, 32768: 68, 65536: 117, 131072: 182 };
const H200_F16_TC_TFLOPS = 989; // dense f16/bf16 tensor-core peak (SXM)
const H200_HBM_GBPS = 4800;
const UNSAFE_TOGGLES = 'disable_robustness,disable_workgroup_init';

interface CheckRow {
  path: string;
  name: string;
  maxRowRelError: number;
  ok: boolean;
}

const HIP_CHECK = { topK: 128, blockSizeQ: 64, blockSizeK: 2, sinkTokens: 16, slidingWindow: 128, refreshInterval: 8 };

async function checks(gpu: GpuContext, paths: PrefillPath[]): Promise<CheckRow[]> {
  const rows: CheckRow[] = [];
  const hip = HIP_CHECK;
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
          const label = c.mode === 'decode' ? `decode ${kernels.decodePath}` : kernels.prefillPath;
          rows.push({ path: label, name: c.name, maxRowRelError: r.maxRowRelError, ok });
          console.log(`${ok ? 'PASS' : 'FAIL'}  [${label}] ${c.name}: max row rel err ${r.maxRowRelError.toExponential(2)} (abs/max ${r.maxAbsErrorRel.toExponential(2)})`);
        }
      } finally {
        kernels.destroy();
      }
    }
  }
  return rows;
}

interface BenchRow extends Partial<Omit<AttentionBenchResult, 'shape' | 'samples'>> {
  seqLen: number;
  method: string;
  mode: string;
  config?: string;
  check?: string;
  toggles?: string;
  error?: string;
}

function vsSdpa(mode: string, T: number, ms: number): string {
  if (mode === 'prefill') {
    const a = SDPA_PREFILL_MS[T] ? `${(SDPA_PREFILL_MS[T]! / ms).toFixed(2)}x SDPA` : '';
    const b = SDPA_FLASH_PREFILL_MS[T] ? `${(SDPA_FLASH_PREFILL_MS[T]! / ms).toFixed(2)}x FA` : '';
    return [a, b].filter(Boolean).join(', ');
  }
  const us = ms * 1000;
  const a = SDPA_DECODE_US[T] ? `${(SDPA_DECODE_US[T]! / us).toFixed(2)}x SDPA` : '';
  const b = SDPA_FLASH_DECODE_US[T] ? `${(SDPA_FLASH_DECODE_US[T]! / us).toFixed(2)}x FA` : '';
  return [a, b].filter(Boolean).join(', ');
}

function rateLine(r: AttentionBenchResult): string {
  return `${r.ms.toFixed(4).padStart(10)} ${r.tflops.toFixed(1).padStart(7)} ${((100 * r.tflops) / H200_F16_TC_TFLOPS).toFixed(1).padStart(6)}% ${r.gbps.toFixed(0).padStart(6)} (${((100 * r.gbps) / H200_HBM_GBPS).toFixed(0).padStart(3)}%)`;
}

// ---------------------------------------------------------------------------------------------
// Variant sweep

interface SweepVariant {
  name: string;
  kernel: Partial<AttentionKernelOptions>;
  decode?: DecodeOptions;
  /** Only in these sweep cases (default: all of its list's). */
  cases?: string[];
}

const PREFILL_VARIANTS: SweepVariant[] = [
  { name: 'mma1 w4 k32 (old default)', kernel: { prefill: 'mma', mma: { warps: 4, bk: 32 } } },
  { name: 'mma1 w2 k16', kernel: { prefill: 'mma', mma: { warps: 2, bk: 16 } } },
  { name: 'mma2 w4 k16 (auto)', kernel: { prefill: 'mma2', mma2: { warps: 4, bk: 16 } } },
  { name: 'mma2 w2 k16', kernel: { prefill: 'mma2', mma2: { warps: 2, bk: 16 } } },
  { name: 'mma2 w4 k32', kernel: { prefill: 'mma2', mma2: { warps: 4, bk: 32 } } },
  { name: 'mma2 w8 k16', kernel: { prefill: 'mma2', mma2: { warps: 8, bk: 16 } } },
  { name: 'mma2 w4 k16 sgsync', kernel: { prefill: 'mma2', mma2: { warps: 4, bk: 16, sync: 'subgroup' } } },
  { name: 'mma2 w2 k16 sgsync', kernel: { prefill: 'mma2', mma2: { warps: 2, bk: 16, sync: 'subgroup' } } },
  { name: 'mma2 w1 k16 sgsync', kernel: { prefill: 'mma2', mma2: { warps: 1, bk: 16, sync: 'subgroup' } } },
  { name: 'mma2 w4 k16 direct', kernel: { prefill: 'mma2', mma2: { warps: 4, bk: 16, direct: true } }, cases: ['dense-prefill'] },
  { name: 'mma2 w4 k16 sgsync direct', kernel: { prefill: 'mma2', mma2: { warps: 4, bk: 16, sync: 'subgroup', direct: true } }, cases: ['dense-prefill'] },
  { name: 'mma2 w2 k16 sgsync direct', kernel: { prefill: 'mma2', mma2: { warps: 2, bk: 16, sync: 'subgroup', direct: true } }, cases: ['dense-prefill'] },
  { name: 'mma2 w2 k16 r2 qs sgsync', kernel: { prefill: 'mma2', mma2: { warps: 2, bk: 16, rows: 2, qSmem: true, sync: 'subgroup' } } },
  { name: 'mma2 w4 k16 r2 sgsync', kernel: { prefill: 'mma2', mma2: { warps: 4, bk: 16, rows: 2, sync: 'subgroup' } } },
];

const SG = (lanes: number, keys: number, wg: number, extra: Partial<AttentionKernelOptions> = {}): Partial<AttentionKernelOptions> => ({
  decode: 'subgroup',
  decodeKernel: { lanes, keys, wg },
  ...extra,
});

const DECODE_COMMON: SweepVariant[] = [
  { name: 'plain (old)', kernel: { decode: 'plain' } },
  { name: 'sg l16 k4 wg128 (auto)', kernel: SG(16, 4, 128) },
  { name: 'sg l16 k8 wg128', kernel: SG(16, 8, 128) },
  { name: 'sg l16 k2 wg128', kernel: SG(16, 2, 128) },
  { name: 'sg l8 k4 wg128', kernel: SG(8, 4, 128) },
  { name: 'sg l16 k4 wg256', kernel: SG(16, 4, 256) },
  { name: 'sg l16 k4 wg64', kernel: SG(16, 4, 64) },
];

const DENSE_DECODE_VARIANTS: SweepVariant[] = [
  ...DECODE_COMMON,
  { name: 'sg l16 k4 wg128 tgt512', kernel: SG(16, 4, 128, { decodeTargetWorkgroups: 512 }) },
  { name: 'sg l16 k4 wg128 tgt2048', kernel: SG(16, 4, 128, { decodeTargetWorkgroups: 2048 }) },
  { name: 'sg l16 k4 wg128 tgt4096', kernel: SG(16, 4, 128, { decodeTargetWorkgroups: 4096 }) },
];

const HIP_DECODE_VARIANTS: SweepVariant[] = [
  ...DECODE_COMMON,
  { name: 'sg l16 k4 wg128 splits4', kernel: SG(16, 4, 128), decode: { splits: 4 } },
  { name: 'sg l16 k4 wg128 splits8', kernel: SG(16, 4, 128), decode: { splits: 8 } },
  { name: 'sg l16 k4 wg128 splits16', kernel: SG(16, 4, 128), decode: { splits: 16 } },
  { name: 'sg l16 k2 wg64 splits64', kernel: SG(16, 2, 64), decode: { splits: 64 } },
];

interface SweepCase {
  key: string;
  method: 'dense' | 'hip' | 'streaming';
  mode: 'prefill' | 'decode';
  T: number;
  variants: SweepVariant[];
}

function sweepCases(quick: boolean): SweepCase[] {
  return [
    { key: 'dense-prefill', method: 'dense', mode: 'prefill', T: quick ? 512 : 32768, variants: PREFILL_VARIANTS },
    { key: 'hip-prefill', method: 'hip', mode: 'prefill', T: quick ? 1024 : 131072, variants: PREFILL_VARIANTS },
    { key: 'dense-decode', method: 'dense', mode: 'decode', T: quick ? 4096 : 131072, variants: DENSE_DECODE_VARIANTS },
    { key: 'hip-decode', method: 'hip', mode: 'decode', T: quick ? 4096 : 131072, variants: HIP_DECODE_VARIANTS },
  ];
}

/** Small correctness checks of one variant for one sweep case (CPU reference). */
async function checkVariant(gpu: GpuContext, sc: SweepCase, v: SweepVariant): Promise<{ ok: boolean; text: string }> {
  const cases: Omit<CheckCase, 'seed'>[] = [];
  const s = { batch: 2, heads: 8, kvHeads: 2, headDim: 128 };
  const hip = { topK: 512, blockSizeQ: 64, blockSizeK: 2, sinkTokens: 16, slidingWindow: 256, refreshInterval: 8 };
  const extra: Partial<AttentionKernelOptions> = {};
  if (sc.mode === 'prefill' && sc.method === 'dense') {
    cases.push({ method: 'dense', mode: 'prefill', layout: 'model', shape: { ...s, queryLength: 333, keyLength: 400 } });
    // 'subgroup' sync: rescale on every growth of a row max, exercising its warp-local O-rescale
    // path, which the emulated tests cannot cover.
    if (v.kernel.prefill === 'mma2' && v.kernel.mma2?.sync === 'subgroup') extra.mma2 = { ...(v.kernel.mma2 ?? {}), rescaleThreshold: 0 };
  } else if (sc.mode === 'prefill') {
    cases.push({ method: 'hip', mode: 'prefill', layout: 'model', hip, shape: { ...s, heads: 8, kvHeads: 2, queryLength: 1200, keyLength: 1200 } });
  } else {
    cases.push({ method: sc.method, mode: 'decode', layout: 'model', hip, shape: { ...s, heads: 32, kvHeads: 8, queryLength: 1, keyLength: 3000 }, ...(v.decode?.splits ? { decodeSplits: v.decode.splits } : {}) });
    cases.push({ method: sc.method, mode: 'decode', hip: HIP_CHECK, shape: { ...s, batch: 1, queryLength: 1, keyLength: 1111 } });
  }
  const kernels = await createAttentionKernels(gpu, { dtype: 'f16', headDim: 128, ...v.kernel, ...extra });
  try {
    let worst = 0;
    for (const [i, c] of cases.entries()) {
      const r = await runAttentionCase(gpu, kernels, { ...c, seed: 4242 + i, cacheReference: true });
      if (!(r.maxRowRelError <= worst)) worst = r.maxRowRelError;
    }
    const ok = worst <= 2e-3;
    return { ok, text: `${ok ? 'PASS' : 'FAIL'} ${worst.toExponential(1)}` };
  } finally {
    kernels.destroy();
  }
}

async function sweep(gpu: GpuContext, report: { sweep?: BenchRow[]; best?: Record<string, unknown> }): Promise<void> {
  const quick = flag('sweep-quick');
  const wanted = new Set(list('sweep-cases', 'dense-prefill,hip-prefill,dense-decode,hip-decode'));
  const only = list('sweep-only', '');
  const doCheck = !flag('sweep-no-check');
  const rows: BenchRow[] = [];
  report.sweep = rows;
  const t0 = performance.now();
  const cases = sweepCases(quick).filter((c) => wanted.has(c.key));
  const best: Record<string, { variant: SweepVariant; row: BenchRow }[]> = {};
  console.log('\ncase           variant                          check        ms          TFLOP/s  %TC     GB/s  (%HBM)  vs SDPA (default, FlashAttention backend)  kernel');
  for (const sc of cases) {
    const bp = await createAttentionBenchProblem(gpu, { seqLen: sc.T, method: sc.method, mode: sc.mode });
    const ranked: { variant: SweepVariant; row: BenchRow }[] = [];
    try {
      for (const v of sc.variants) {
        if (only.length && !only.some((o) => v.name.includes(o))) continue;
        if (v.cases && !v.cases.includes(sc.key)) continue;
        const label = `${sc.key} ${sc.T}`.padEnd(14);
        let check = 'unchecked';
        try {
          if (doCheck) {
            const c = await checkVariant(gpu, sc, v);
            check = c.text;
          }
          const kernels = await createAttentionKernels(gpu, { dtype: 'f16', headDim: 128, ...v.kernel });
          try {
            const r = await timeAttention(gpu, kernels, bp, { warmup: 1, iterations: sc.mode === 'prefill' ? 3 : 7, ...(v.decode ? { decode: v.decode } : {}) });
            const { shape: _s, samples: _x, ...rest } = r;
            const row: BenchRow = { seqLen: sc.T, method: sc.method, mode: sc.mode, config: v.name, check, ...rest };
            rows.push(row);
            if (!check.startsWith('FAIL')) ranked.push({ variant: v, row });
            console.log(`${label} ${v.name.padEnd(32)} ${check.padEnd(12)} ${rateLine(r)}  ${vsSdpa(sc.mode, sc.T, r.ms).padEnd(24)} ${r.kernel} [${r.reps} reps]`);
          } finally {
            kernels.destroy();
          }
        } catch (e) {
          const msg = e instanceof Error ? e.message : String(e);
          rows.push({ seqLen: sc.T, method: sc.method, mode: sc.mode, config: v.name, check, error: msg });
          console.log(`${label} ${v.name.padEnd(32)} ${check.padEnd(12)} ERROR ${msg.split('\n').slice(0, 3).join(' | ')}`);
        }
      }
    } finally {
      bp.destroy();
    }
    ranked.sort((a, b) => a.row.ms! - b.row.ms!);
    best[sc.key] = ranked;
    console.log(`  [${((performance.now() - t0) / 1000).toFixed(0)} s so far]`);
  }
  console.log('\nBEST (checked variants, fastest first):');
  const summary: Record<string, unknown> = {};
  for (const [key, ranked] of Object.entries(best)) {
    const top = ranked.slice(0, 3);
    summary[key] = top.map((x) => ({ name: x.variant.name, ms: x.row.ms, kernel: x.variant.kernel, decode: x.variant.decode, tflops: x.row.tflops, gbps: x.row.gbps }));
    for (const x of top) {
      console.log(`  ${key.padEnd(14)} ${x.variant.name.padEnd(32)} ${x.row.ms!.toFixed(4)} ms  options ${JSON.stringify(x.variant.kernel)}${x.variant.decode ? ` decode ${JSON.stringify(x.variant.decode)}` : ''}`);
    }
  }
  report.best = summary;
  const json = arg('json');
  if (json) writeFileSync(json, JSON.stringify(report, null, 2));

  if (flag('sweep-unsafe-too')) {
    gpu.destroy();
    const toggles = [`${DEFAULT_DAWN_TOGGLES[0]},${UNSAFE_TOGGLES}`, ...DEFAULT_DAWN_TOGGLES.slice(1)];
    console.log(`\nRe-timing the two best variants per case on a device with ${UNSAFE_TOGGLES}:`);
    const g2 = await acquireGpu({ dawnToggles: toggles });
    try {
      for (const sc of cases) {
        const top = (best[sc.key] ?? []).slice(0, 2);
        if (!top.length) continue;
        const bp = await createAttentionBenchProblem(g2, { seqLen: sc.T, method: sc.method, mode: sc.mode });
        try {
          for (const { variant: v } of top) {
            const kernels = await createAttentionKernels(g2, { dtype: 'f16', headDim: 128, ...v.kernel });
            try {
              const c = doCheck ? (await checkVariant(g2, sc, v)).text : 'unchecked';
              const r = await timeAttention(g2, kernels, bp, { warmup: 1, iterations: sc.mode === 'prefill' ? 3 : 7, ...(v.decode ? { decode: v.decode } : {}) });
              const { shape: _s, samples: _x, ...rest } = r;
              rows.push({ seqLen: sc.T, method: sc.method, mode: sc.mode, config: v.name, check: c, toggles: UNSAFE_TOGGLES, ...rest });
              console.log(`${`${sc.key} ${sc.T}`.padEnd(14)} ${`${v.name} UNSAFE`.padEnd(32)} ${c.padEnd(12)} ${rateLine(r)}  ${vsSdpa(sc.mode, sc.T, r.ms)}`);
            } catch (e) {
              console.log(`${sc.key} ${v.name} UNSAFE: ERROR ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
            } finally {
              kernels.destroy();
            }
          }
        } finally {
          bp.destroy();
        }
      }
    } finally {
      g2.destroy();
    }
  }
  console.log(`\nsweep took ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}

async function main(): Promise<void> {
  const extraToggles = arg('dawn-toggles');
  const gpu = await acquireGpu(extraToggles ? { dawnToggles: [`${DEFAULT_DAWN_TOGGLES[0]},${extraToggles}`, ...DEFAULT_DAWN_TOGGLES.slice(1)] } : {});
  const info = gpu.adapterInfo;
  console.log(`adapter: ${summaryLine(info)}${extraToggles ? ` (extra Dawn toggles: ${extraToggles})` : ''}`);
  console.log(`features: ${JSON.stringify(gpu.features)}`);
  console.log(`subgroup sizes ${info.subgroupMinSize}–${info.subgroupMaxSize}; subgroupMatrixConfigs ${JSON.stringify(info.subgroupMatrixConfigs)}`);
  const L = gpu.limits;
  console.log(`limits: maxStorageBufferBindingSize ${L.maxStorageBufferBindingSize}, maxBufferSize ${L.maxBufferSize}, maxComputeWorkgroupStorageSize ${L.maxComputeWorkgroupStorageSize}, maxComputeInvocationsPerWorkgroup ${L.maxComputeInvocationsPerWorkgroup}`);
  const report: { adapter: unknown; checks?: CheckRow[]; bench?: BenchRow[]; sweep?: BenchRow[]; best?: Record<string, unknown> } = { adapter: info };
  let failed = false;
  if (flag('sweep')) {
    await sweep(gpu, report);
  } else {
    const paths = list('paths', gpu.features.subgroupMatrix ? 'mma2,mma,plain' : 'plain') as PrefillPath[];
    if (!gpu.features.subgroupMatrix) console.log('!!! no chromium-experimental-subgroup-matrix on this adapter: the tensor-core kernels cannot be checked here');
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
      console.log('\nT        method     mode     path           ms        TFLOP/s  %TC     GB/s  (%HBM)  vs SDPA (default, FlashAttention backend)');
      for (const mode of modes)
        for (const method of methods)
          for (const path of mode === 'decode' ? paths.slice(0, 1) : paths)
            for (const T of seqLens) {
              if (path === 'plain' && mode === 'prefill' && method === 'dense' && T > 32768 && paths.length > 1) continue; // too slow to be useful
              try {
                const r = await benchAttention(gpu, { seqLen: T, method, mode, kernelOptions: { prefill: path }, warmup: 2, iterations: T >= 65536 && mode === 'prefill' ? 3 : 7 });
                const { shape: _s, samples: _x, ...rest } = r;
                rows.push({ seqLen: T, method, mode, config: path, ...rest });
                console.log(
                  `${String(T).padEnd(8)} ${method.padEnd(10)} ${mode.padEnd(8)} ${path.padEnd(14)} ${rateLine(r)}  ${vsSdpa(mode, T, r.ms).padEnd(24)}${r.mask ? `  [${r.mask} mask]` : ''} [${r.timing}, ${r.reps} reps/sample] ${r.kernel}`,
                );
              } catch (e) {
                const msg = e instanceof Error ? e.message : String(e);
                rows.push({ seqLen: T, method, mode, config: path, error: msg });
                console.log(`${String(T).padEnd(8)} ${method.padEnd(10)} ${mode.padEnd(8)} ${path.padEnd(14)} ERROR ${msg.split('\n')[0]}`);
              }
            }
      report.bench = rows;
    }
  }
  const json = arg('json');
  if (json) writeFileSync(json, JSON.stringify(report, null, 2));
  if (!flag('sweep-unsafe-too')) gpu.destroy();
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
