/**
 * WebGPU matmul benchmark and check, for one call on the GPU host (plain node, no vitest):
 *
 *   node dist/bench/gpu-matmul.js [--quick] [--no-model] [--out results.json]
 *
 * 1. Prints the adapter, its features, limits and subgroup-matrix configs.
 * 2. Checks every matmul kernel the device has (GEMV, tiled, direct, the tensor-core
 *    subgroup-matrix GEMM and its emulation) against the CPU at small ragged sizes.
 * 3. Times y = x·Wᵀ with f16 weights for the Llama-3-8B shapes (N×K = 4096×4096, 14336×4096,
 *    4096×14336, 128256×4096) at M = 1 (GEMV sweep: GB/s of weights read) and M = 2048 (tiled
 *    and a sweep of tensor-core tilings: TFLOP/s), with GPU timestamps per pass.
 * 4. Unless --no-model: a Llama-3-8B-shaped LlamaGpu with random weights (32 layers, hidden 4096,
 *    32 heads, 8 KV heads, head_dim 128, intermediate 14336, vocab 128256, f16), dense attention:
 *    prefill tok/s (one 2048-token chunk) and decode tok/s.
 * Results are printed as they come and written to --out (JSON) at the end and after each part.
 */
import { LLAMA3_8B } from '../src/model/synthetic.js';
import { writeFileSync } from 'node:fs';
import { acquireGpu, createStorageBuffer, type GpuContext, GpuTimer, readFloat16, readFloat32, roundToFloat16, summaryLine, toFloat16Bits } from '../src/gpu/index.js';
import { GpuLinear, type LinearOptions, type MatmulChoice, pickSubgroupMatrixConfig, type SubgroupMatrixTuning } from '../src/kernels/matmul/matmul.js';
import { type MatmulKind, subgroupMatrixTile, variantName } from '../src/kernels/matmul/wgsl.js';
import { GpuRandomFill } from '../src/kernels/random-fill/random-fill.js';
import type { StorageType } from '../src/kernels/types.js';
import { matmul as cpuMatmul } from '../src/model/cpu-ops.js';
import type { LlamaConfig } from '../src/model/config.js';
import { LlamaGpu } from '../src/model/llama-gpu.js';
import { Rng } from '../src/util/rng.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const withModel = !args.includes('--no-model');
/** Tiny shapes and model, to try the script on a CPU rasteriser (lavapipe). */
const smoke = args.includes('--smoke');
const outIdx = args.indexOf('--out');
const outFile = outIdx >= 0 ? args[outIdx + 1] : undefined;
const mmIdx = args.indexOf('--model-matmul');
/** Force the model's matmul kernel (default auto; tiled automatically if the tensor-core check failed). */
let modelMatmul: MatmulChoice = (mmIdx >= 0 ? args[mmIdx + 1] : 'auto') as 'auto' | MatmulKind;

const results: Record<string, unknown> = { started: new Date().toISOString(), args };
/** Skip the GEMV sweeps (prefill GEMM tuning runs). */
const noGemv = args.includes('--no-gemv');
/** Only the first N shapes of the timing table. */
const shapesIdx = args.indexOf('--shapes');
const shapeCount = shapesIdx >= 0 ? Number(args[shapesIdx + 1]) : Infinity;
/** Tensor-core tilings checked for correctness on the device next to the default. */
const DB_CHECKS: Partial<SubgroupMatrixTuning>[] = [
  { perSubgroup: [4, 4], subgroups: [2, 2], kTile: 32, doubleBuffer: true },
  { perSubgroup: [2, 4], subgroups: [4, 2], kTile: 32, doubleBuffer: true },
  { perSubgroup: [4, 4], subgroups: [2, 4], kTile: 16, doubleBuffer: true },
];
/** The model benchmark's tensor-core tilings (by name; each is a separate model run). */
const MODEL_TILINGS: Record<string, Partial<SubgroupMatrixTuning> | undefined> = {
  default: undefined,
  'old default (64x128 single-buffered)': { perSubgroup: [2, 4], subgroups: [2, 2], kTile: 32, doubleBuffer: false },
  '256x128x16 db': { perSubgroup: [4, 4], subgroups: [4, 2], kTile: 16, doubleBuffer: true },
};
function save(): void {
  if (outFile) writeFileSync(outFile, JSON.stringify(results, null, 1));
}
function log(line: string): void {
  console.log(line);
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------------
// Correctness

async function checkKernel(gpu: GpuContext, label: string, M: number, N: number, K: number, input: StorageType, output: StorageType, opts: Partial<LinearOptions>): Promise<{ label: string; ok: boolean; error?: number; message?: string }> {
  const rng = new Rng(1234 + M + N + K);
  const x = roundToFloat16(rng.normalArray(M * K));
  const w = roundToFloat16(rng.normalArray(N * K, 1 / Math.sqrt(K)));
  const b = rng.normalArray(N);
  const y0 = roundToFloat16(rng.normalArray(M * N));
  const up = (a: Float32Array, t: StorageType) => createStorageBuffer(gpu, t === 'f16' ? toFloat16Bits(a) : a);
  const xb = up(x, input);
  const wb = up(w, 'f16');
  const yb = up(y0, output);
  const bb = createStorageBuffer(gpu, b);
  try {
    gpu.device.pushErrorScope('validation');
    const lin = await GpuLinear.create(gpu, { weight: wb, weightType: 'f16', N, K, bias: bb, x: xb, input, y: yb, output, accumulate: true, ...opts });
    lin.set({ M });
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    lin.encode(pass);
    pass.end();
    gpu.device.queue.submit([enc.finish()]);
    const got = output === 'f16' ? await readFloat16(gpu, yb, M * N) : await readFloat32(gpu, yb, M * N);
    const err = await gpu.device.popErrorScope();
    if (err) throw new Error(`validation: ${err.message}`);
    const ref = cpuMatmul(x, w, M, K, N, b);
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < M * N; i++) {
      const want = y0[i]! + ref[i]!;
      worst = Math.max(worst, Math.abs(got[i]! - want));
      scale = Math.max(scale, Math.abs(want));
    }
    const rel = worst / scale;
    const tol = output === 'f16' ? 3e-3 : 1e-4;
    const name = `${label}: ${variantName(lin.variantFor(M))} M${M} N${N} K${K}`;
    lin.destroy();
    return { label: name, ok: rel <= tol, error: rel };
  } catch (e) {
    return { label, ok: false, message: errText(e) };
  } finally {
    [xb, wb, yb, bb].forEach((t) => t.destroy());
  }
}

async function correctness(gpu: GpuContext): Promise<void> {
  const checks: Promise<unknown>[] = [];
  const out: unknown[] = [];
  const run = async (...a: Parameters<typeof checkKernel>) => {
    const r = await checkKernel(...a);
    log(`  ${r.ok ? 'PASS' : 'FAIL'} ${r.label}${r.error !== undefined ? ` max|Δ|/max|y| = ${r.error.toExponential(2)}` : ''}${r.message ? ` — ${r.message}` : ''}`);
    out.push(r);
  };
  log('correctness vs CPU (f16 weights, bias, accumulate):');
  await run(gpu, 'gemv', 1, 1000, 4096, 'f16', 'f16', { kind: 'gemv' });
  await run(gpu, 'gemv', 3, 77, 264, 'f32', 'f32', { kind: 'gemv' });
  await run(gpu, 'tiled', 77, 200, 264, 'f16', 'f32', { kind: 'tiled' });
  await run(gpu, 'direct', 77, 200, 264, 'f16', 'f32', { kind: 'direct' });
  await run(gpu, 'subgroup-matrix emulated 8x8x8', 37, 45, 40, 'f16', 'f32', { kind: 'subgroup-matrix', emulateSubgroupMatrix: { shape: { M: 8, N: 8, K: 8 }, subgroupSize: 8 }, subgroupMatrix: { perSubgroup: [1, 2], subgroups: [2, 2], kTile: 16 } });
  if (pickSubgroupMatrixConfig(gpu)) {
    for (const [M, N, K, input, output] of [
      [77, 200, 264, 'f16', 'f32'],
      [130, 333, 4096, 'f32', 'f32'],
      [64, 128, 64, 'f16', 'f16'],
      [2048, 512, 1024, 'f16', 'f16'],
    ] as const) {
      await run(gpu, 'subgroup-matrix', M, N, K, input, output, { kind: 'subgroup-matrix' });
      for (const t of DB_CHECKS) await run(gpu, `subgroup-matrix ${JSON.stringify(t)}`, M, N, K, input, output, { kind: 'subgroup-matrix', subgroupMatrix: t });
    }
    await run(gpu, 'subgroup-matrix 4x4/2x4', 300, 600, 512, 'f16', 'f32', { kind: 'subgroup-matrix', subgroupMatrix: { perSubgroup: [4, 4], subgroups: [2, 2], kTile: 32 } });
  } else {
    log('  (no f16→f32 subgroup-matrix config on this adapter: tensor-core kernel not checked)');
  }
  results.correctness = out;
  save();
  void checks;
  const sgFailed = out.some((r) => (r as { label: string; ok: boolean }).label.startsWith('subgroup-matrix') && !(r as { ok: boolean }).ok && !(r as { label: string }).label.includes('emulated'));
  if (sgFailed && modelMatmul === 'auto') {
    log('  tensor-core kernel failed its check: the model benchmark will use the tiled kernel for prefill');
    modelMatmul = { single: 'gemv', multi: 'tiled' };
  }
}

// ---------------------------------------------------------------------------------------------
// Timing

interface Timed {
  shape: string;
  M: number;
  N: number;
  K: number;
  variant: string;
  ms: number;
  tflops: number;
  weightGBs: number;
}

async function timeLinear(gpu: GpuContext, timer: GpuTimer, M: number, N: number, K: number, opts: Partial<LinearOptions>, reps: number, weights: GPUBuffer[], x: GPUBuffer, y: GPUBuffer): Promise<Timed> {
  const lins: GpuLinear[] = [];
  for (const w of weights) lins.push(await GpuLinear.create(gpu, { weight: w, weightType: 'f16', N, K, x, input: 'f16', y, output: 'f16', ...opts, ...(lins[0] ? { shareParamsWith: lins[0] } : {}) }));
  lins[0]!.set({ M });
  gpu.device.pushErrorScope('validation');
  // warm-up
  await timer.time((enc) => {
    const pass = enc.beginComputePass('warm-up');
    lins[0]!.encode(pass);
    pass.end();
  });
  // Short kernels (GEMV: tens of µs, under the 65.5 µs timestamp tick of NVIDIA's Vulkan driver)
  // are timed as one pass of `reps` dispatches (rotating over the weight copies) divided by reps;
  // long ones (GEMM) per pass, median.
  const onePass = M === 1;
  const t = await timer.time((enc) => {
    if (onePass) {
      const pass = enc.beginComputePass(`${reps} reps`);
      for (let r = 0; r < reps; r++) lins[r % lins.length]!.encode(pass);
      pass.end();
      return;
    }
    for (let r = 0; r < reps; r++) {
      const pass = enc.beginComputePass(`rep ${r}`);
      lins[r % lins.length]!.encode(pass);
      pass.end();
    }
  });
  const err = await gpu.device.popErrorScope();
  if (err) throw new Error(`validation: ${err.message}`);
  const per = !onePass && t.passes.length ? t.passes.map((p) => p.ms).sort((a, b) => a - b)[Math.floor(t.passes.length / 2)]! : t.ms / reps;
  const variant = variantName(lins[0]!.variantFor(M));
  lins.forEach((l) => l.destroy());
  return { shape: `${N}x${K}`, M, N, K, variant, ms: per, tflops: (2 * M * N * K) / (per * 1e-3) / 1e12, weightGBs: (N * K * 2) / (per * 1e-3) / 1e9 };
}

async function timing(gpu: GpuContext): Promise<void> {
  const timer = new GpuTimer(gpu, { maxPasses: 64 });
  log(`timing source: ${timer.source}`);
  const fill = await GpuRandomFill.create(gpu, 'f16');
  const shapes: [number, number][] = smoke
    ? [
        [256, 128],
        [320, 64],
      ]
    : [
        [4096, 4096],
        [14336, 4096],
        [4096, 14336],
        [128256, 4096],
        // The model's fused projections: QKV (4096 + 2·1024) and gate/up (2·14336).
        [6144, 4096],
        [28672, 4096],
      ];
  const MBIG = smoke ? 64 : 2048;
  const maxBinding = gpu.limits.maxStorageBufferBindingSize;
  const out: Timed[] = [];
  const randomBuffer = (elements: number, id: number) => {
    const b = gpu.device.createBuffer({ size: Math.ceil((elements * 2) / 16) * 16, usage: 0x80 | 0x8 | 0x4 });
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    const done = fill.encode(pass, b, { count: elements, seed: 7, tensorId: id, kind: 'linear', scaleExp: -6 });
    pass.end();
    gpu.device.queue.submit([enc.finish()]);
    done();
    return b;
  };
  const sg = pickSubgroupMatrixConfig(gpu);
  {
    // Warm-up (~1 s of GEMMs): an idle card starts at a low clock, and the first shape timed
    // read up to 2x slow without this.
    const [N, K] = shapes[0]!;
    const w = randomBuffer(N * K, 99);
    const x = randomBuffer(MBIG * K, 98);
    const y = gpu.device.createBuffer({ size: Math.ceil((MBIG * N * 2) / 16) * 16, usage: 0x80 | 0x8 | 0x4 });
    const lin = await GpuLinear.create(gpu, { weight: w, weightType: 'f16', N, K, x, input: 'f16', y, output: 'f16' });
    lin.set({ M: MBIG });
    const until = performance.now() + (smoke ? 50 : 1500);
    while (performance.now() < until) {
      const enc = gpu.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      for (let r = 0; r < 8; r++) lin.encode(pass);
      pass.end();
      gpu.device.queue.submit([enc.finish()]);
      await gpu.device.queue.onSubmittedWorkDone();
    }
    lin.destroy();
    [w, x, y].forEach((b) => b.destroy());
  }
  for (const [N, K] of shapes.slice(0, shapeCount)) {
    // M = 1: several weight copies so that repeated runs do not hit L2 (H200: 50 MB).
    const copies = Math.min(8, Math.max(1, Math.ceil((256 << 20) / (N * K * 2))));
    const weights = Array.from({ length: copies }, (_, i) => randomBuffer(N * K, 100 + i));
    const M2 = Math.min(MBIG, Math.floor(maxBinding / (N * 2)));
    const x = randomBuffer(MBIG * K, 1);
    const y = gpu.device.createBuffer({ size: Math.ceil((M2 * N * 2) / 16) * 16, usage: 0x80 | 0x8 | 0x4 });
    await gpu.device.queue.onSubmittedWorkDone();
    const tryTime = async (M: number, kind: MatmulKind, opts: Partial<LinearOptions>, reps: number) => {
      try {
        const r = await timeLinear(gpu, timer, M, N, K, { kind, ...opts }, reps, M === 1 ? weights : [weights[0]!], x, y);
        out.push(r);
        log(`  ${r.shape} M=${M}: ${r.variant}: ${r.ms.toFixed(3)} ms, ${r.tflops.toFixed(2)} TFLOP/s, weights ${r.weightGBs.toFixed(0)} GB/s`);
      } catch (e) {
        log(`  ${N}x${K} M=${M}: ${kind} ${JSON.stringify(opts)} FAILED: ${errText(e)}`);
        out.push({ shape: `${N}x${K}`, M, N, K, variant: `${kind} ${JSON.stringify(opts)} FAILED: ${errText(e)}`, ms: NaN, tflops: NaN, weightGBs: NaN });
      }
    };
    log(`${N}x${K}, f16 weights:`);
    const gemvSweep = quick ? [{ workgroupSize: 256, rows: 4 }] : [128, 256].flatMap((workgroupSize) => [1, 2, 4, 8].map((rows) => ({ workgroupSize, rows })));
    if (!noGemv) for (const g of gemvSweep) await tryTime(1, 'gemv', { gemv: g }, 32);
    if (M2 < MBIG) log(`  (M = 2048 output does not fit one binding of ${maxBinding} bytes: timing M = ${M2})`);
    await tryTime(M2, 'tiled', {}, quick ? 3 : 5);
    if (sg) {
      const tilings = quick
        ? [{ perSubgroup: [2, 4], subgroups: [2, 2], kTile: 32, doubleBuffer: false }, { perSubgroup: [4, 4], subgroups: [2, 2], kTile: 32, doubleBuffer: true }]
        : [
            // The old default (64×128, 4 subgroups, single-buffered) for comparison.
            { perSubgroup: [2, 4], subgroups: [2, 2], kTile: 32, doubleBuffer: false },
            { perSubgroup: [4, 4], subgroups: [2, 2], kTile: 32, doubleBuffer: true },
            { perSubgroup: [2, 4], subgroups: [4, 2], kTile: 32, doubleBuffer: true },
            { perSubgroup: [4, 2], subgroups: [2, 4], kTile: 32, doubleBuffer: true },
            { perSubgroup: [4, 4], subgroups: [2, 4], kTile: 16, doubleBuffer: true },
            { perSubgroup: [4, 4], subgroups: [4, 2], kTile: 16, doubleBuffer: true },
            { perSubgroup: [4, 4], subgroups: [4, 2], kTile: 32, doubleBuffer: false },
            { perSubgroup: [4, 4], subgroups: [4, 4], kTile: 16, doubleBuffer: false },
            { perSubgroup: [2, 4], subgroups: [4, 4], kTile: 16, doubleBuffer: false },
            { perSubgroup: [2, 2], subgroups: [4, 4], kTile: 32, doubleBuffer: false },
          ];
      for (const t of tilings) {
        const probe = { kind: 'subgroup-matrix' as const, weight: 'f16' as const, input: 'f16' as const, output: 'f16' as const, compact: false, shape: { M: sg.M, N: sg.N, K: sg.K }, subgroupSize: gpu.adapterInfo.subgroupMaxSize || 32, perSubgroup: t.perSubgroup as [number, number], subgroups: t.subgroups as [number, number], kTile: Math.max(t.kTile, sg.K), vector: true, doubleBuffer: t.doubleBuffer, emulate: false };
        const { sharedBytes, threads } = subgroupMatrixTile(probe);
        if (sharedBytes > gpu.limits.maxComputeWorkgroupStorageSize || threads > gpu.limits.maxComputeInvocationsPerWorkgroup) continue;
        await tryTime(M2, 'subgroup-matrix', { subgroupMatrix: t as LinearOptions['subgroupMatrix'] & object }, quick ? 3 : 5);
      }
    }
    weights.forEach((w) => w.destroy());
    x.destroy();
    y.destroy();
    results.timing = out;
    save();
  }
  timer.destroy();
}

// ---------------------------------------------------------------------------------------------
// Llama-3-8B-shaped model (LLAMA3_8B from src/model/synthetic.ts)


async function model(gpu: GpuContext, tilingName: string, tiling: Partial<SubgroupMatrixTuning> | undefined): Promise<void> {
  const config: LlamaConfig = smoke ? { ...LLAMA3_8B, hiddenSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 32, intermediateSize: 256, vocabSize: 1000 } : LLAMA3_8B;
  const prefill = smoke ? 64 : 2048;
  const decode = quick ? 16 : 64;
  const t0 = performance.now();
  const lm = await LlamaGpu.random(gpu, config, 42, { capacity: smoke ? 256 : 4096, maxChunk: prefill, matmul: modelMatmul, ...(tiling ? { subgroupMatrix: tiling } : {}) });
  log(`  matmul kernels: ${JSON.stringify(modelMatmul)}, tensor-core tiling ${tilingName} ${JSON.stringify(tiling ?? {})}`);
  const buildMs = performance.now() - t0;
  log(`${smoke ? 'smoke-test' : 'Llama-3-8B-shaped'} random model: weights ${(lm.bytes.weights / 2 ** 30).toFixed(2)} GiB ${lm.weightType}, KV cache ${(lm.bytes.kvCache / 2 ** 30).toFixed(2)} GiB, activations ${(lm.bytes.activations / 2 ** 30).toFixed(2)} GiB; built in ${buildMs.toFixed(0)} ms`);
  const rng = new Rng(5);
  const ids = Array.from({ length: prefill }, () => rng.int(config.vocabSize));
  // warm-up (compiles every pipeline), then timed runs
  await lm.forward(ids.slice(0, 256), { chunkSize: 256 });
  await lm.forward(ids.slice(0, 17));
  await lm.forward([1]);
  const runs: { prefillMs: number; prefillTokS: number; decodeMs: number; decodeTokS: number }[] = [];
  for (let r = 0; r < (quick ? 1 : 2); r++) {
    lm.reset();
    let t = performance.now();
    const logits = await lm.forward(ids, { chunkSize: prefill });
    const prefillMs = performance.now() - t;
    let next = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[next]!) next = i;
    t = performance.now();
    for (let i = 0; i < decode; i++) {
      const l = await lm.forward([next]);
      next = 0;
      for (let j = 1; j < l.length; j++) if (l[j]! > l[next]!) next = j;
    }
    const decodeMs = performance.now() - t;
    runs.push({ prefillMs, prefillTokS: (prefill / prefillMs) * 1000, decodeMs, decodeTokS: (decode / decodeMs) * 1000 });
    log(`  run ${r}: prefill ${prefill} tokens in ${prefillMs.toFixed(0)} ms = ${((prefill / prefillMs) * 1000).toFixed(0)} tok/s; decode ${decode} tokens (greedy, one readback each) in ${decodeMs.toFixed(0)} ms = ${((decode / decodeMs) * 1000).toFixed(1)} tok/s`);
  }
  const models = (results.models ??= {}) as Record<string, unknown>;
  models[tilingName] = { config: smoke ? 'smoke' : 'Llama-3-8B shape, random weights', tiling: tiling ?? 'default', weightType: lm.weightType, bytes: lm.bytes, buildMs, prefillTokens: prefill, decodeTokens: decode, runs };
  save();
  lm.destroy();
}

async function main(): Promise<void> {
  const gpu = await acquireGpu({ powerPreference: 'high-performance' });
  const info = { adapter: summaryLine(gpu.adapterInfo), adapterInfo: gpu.adapterInfo, features: gpu.features, limits: gpu.limits };
  results.device = info;
  log(`adapter: ${info.adapter}`);
  log(`features: ${JSON.stringify(gpu.features)}; subgroup sizes ${gpu.adapterInfo.subgroupMinSize}-${gpu.adapterInfo.subgroupMaxSize}`);
  log(`subgroupMatrixConfigs: ${JSON.stringify(gpu.adapterInfo.subgroupMatrixConfigs)}`);
  log(`limits: maxStorageBufferBindingSize ${gpu.limits.maxStorageBufferBindingSize}, maxBufferSize ${gpu.limits.maxBufferSize}, maxComputeWorkgroupStorageSize ${gpu.limits.maxComputeWorkgroupStorageSize}, maxComputeInvocationsPerWorkgroup ${gpu.limits.maxComputeInvocationsPerWorkgroup}`);
  save();
  await correctness(gpu);
  await timing(gpu);
  if (withModel) {
    for (const [name, tiling] of Object.entries(MODEL_TILINGS)) {
      try {
        await model(gpu, name, tiling);
      } catch (e) {
        log(`model benchmark (${name}) FAILED: ${errText(e)}`);
        ((results.models ??= {}) as Record<string, unknown>)[name] = { error: errText(e) };
        save();
      }
    }
  }
  results.finished = new Date().toISOString();
  save();
  gpu.destroy();
}

await main();
