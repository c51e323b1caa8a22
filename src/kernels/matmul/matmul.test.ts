/**
 * matmul kernels vs the CPU reference (src/model/cpu-ops.ts matmul, float64 sums) on fresh
 * random inputs: GEMV (vector and scalar loads, subgroup and tree reductions, several tokens),
 * tiled GEMM, the subgroup-matrix GEMM (real where the adapter has it, else emulated), f16 and
 * f32 storage, bias, residual accumulation, offsets/strides, weights split over bindings.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { acquireGpu, compileShader, createStorageBuffer, type GpuContext, readFloat16, readFloat32, roundToFloat16, toFloat16Bits } from '../../gpu/index.js';
import { matmul as cpuMatmul } from '../../model/cpu-ops.js';
import { getTestGpu, testSeed } from '../../../test/gpu-helpers.js';
import { Rng } from '../../util/rng.js';
import type { StorageType } from '../types.js';
import { GpuLinear, type LinearOptions, pickSubgroupMatrixConfig } from './matmul.js';
import { matmulWgsl, type SubgroupMatrixVariant, variantName } from './wgsl.js';

const gpu = await getTestGpu();
const gpuNoSubgroups = gpu?.features.subgroups ? await getTestGpu({ disable: { subgroups: true } }) : null;
afterAll(() => {
  gpu?.destroy();
  gpuNoSubgroups?.destroy();
});

interface Case {
  M: number;
  N: number;
  K: number;
  weight: StorageType;
  input: StorageType;
  output: StorageType;
  bias?: boolean;
  accumulate?: boolean;
  /** Extra row stride / offsets (elements). */
  padX?: number;
  xOffset?: number;
  padY?: number;
  yOffset?: number;
  opts?: Partial<LinearOptions>;
}

function upload(ctx: GpuContext, data: Float32Array, t: StorageType, label: string): GPUBuffer {
  // Pad to 16 bytes so vec4 views never fall short.
  const n = Math.ceil((data.length * (t === 'f16' ? 2 : 4)) / 16) * (t === 'f16' ? 8 : 4);
  const padded = new Float32Array(n);
  padded.set(data);
  return createStorageBuffer(ctx, t === 'f16' ? toFloat16Bits(padded) : padded, { label });
}

/** Runs one case on the GPU and returns [gpu result, CPU reference, normalising scale]. */
async function runCase(ctx: GpuContext, c: Case, rng: Rng): Promise<{ got: Float32Array; want: Float32Array; scale: number; name: string }> {
  const ldx = c.K + (c.padX ?? 0);
  const ldy = c.N + (c.padY ?? 0);
  const xOff = c.xOffset ?? 0;
  const yOff = c.yOffset ?? 0;
  const x = rng.normalArray(xOff + c.M * ldx);
  const w = rng.normalArray(c.N * c.K, 1 / Math.sqrt(c.K));
  const b = c.bias ? rng.normalArray(c.N) : undefined;
  const y0 = rng.normalArray(yOff + c.M * ldy);
  const round = (a: Float32Array, t: StorageType) => (t === 'f16' ? roundToFloat16(a) : a);
  const xr = round(x, c.input);
  const wr = round(w, c.weight);
  const y0r = round(y0, c.output);
  const bufs = [upload(ctx, xr, c.input, 'x'), upload(ctx, wr, c.weight, 'w'), upload(ctx, y0r, c.output, 'y')];
  const biasBuf = b ? createStorageBuffer(ctx, b, { label: 'bias' }) : undefined;
  const lin = await GpuLinear.create(ctx, {
    weight: bufs[1]!,
    weightType: c.weight,
    N: c.N,
    K: c.K,
    ...(biasBuf ? { bias: biasBuf } : {}),
    x: bufs[0]!,
    input: c.input,
    ldx,
    xOffset: xOff,
    y: bufs[2]!,
    output: c.output,
    ldy,
    yOffset: yOff,
    accumulate: !!c.accumulate,
    ...(c.opts ?? {}),
  });
  lin.set({ M: c.M });
  const enc = ctx.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  lin.encode(pass);
  pass.end();
  ctx.device.queue.submit([enc.finish()]);
  const all = c.output === 'f16' ? await readFloat16(ctx, bufs[2]!, y0.length) : await readFloat32(ctx, bufs[2]!, y0.length);
  const name = `${variantName(lin.variantFor(c.M))} M${c.M} N${c.N} K${c.K}`;
  lin.destroy();
  for (const buf of [...bufs, biasBuf]) buf?.destroy();

  // Reference on the values the GPU saw; the subgroup-matrix kernel stages x as f16.
  const sgmat = lin.variantFor(c.M).kind === 'subgroup-matrix';
  const xs = new Float32Array(c.M * c.K);
  for (let m = 0; m < c.M; m++) xs.set(xr.subarray(xOff + m * ldx, xOff + m * ldx + c.K), m * c.K);
  const ref = cpuMatmul(sgmat ? roundToFloat16(xs) : xs, wr, c.M, c.K, c.N, b);
  const want = y0r.slice();
  const got = all;
  let scale = 0;
  for (let m = 0; m < c.M; m++) {
    for (let n = 0; n < c.N; n++) {
      const i = yOff + m * ldy + n;
      want[i] = (c.accumulate ? want[i]! : 0) + ref[m * c.N + n]!;
      scale = Math.max(scale, Math.abs(want[i]!));
    }
  }
  return { got, want, scale, name };
}

function check(r: { got: Float32Array; want: Float32Array; scale: number; name: string }, tol: number): void {
  let worst = 0;
  for (let i = 0; i < r.want.length; i++) worst = Math.max(worst, Math.abs(r.got[i]! - r.want[i]!));
  const rel = worst / r.scale;
  console.log(`${r.name}: max |Δ| / max |y| = ${rel.toExponential(2)}`);
  expect(rel).toBeLessThanOrEqual(tol);
}

const f32io = { weight: 'f32', input: 'f32', output: 'f32' } as const;
const f16io = { weight: 'f16', input: 'f16', output: 'f16' } as const;
const TOL_F32 = 1e-5;
const TOL_F16 = 2e-3;

describe.skipIf(!gpu)('matmul kernels vs CPU', () => {
  it('GEMV: vector and scalar K, ragged N, bias, accumulate, offsets, f16/f32 storage, several tokens', async () => {
    const rng = new Rng(testSeed('matmul gemv'));
    const cases: [Case, number][] = [
      [{ M: 1, N: 77, K: 256, ...f32io, bias: true }, TOL_F32],
      [{ M: 1, N: 130, K: 173, ...f32io, accumulate: true, padX: 3, xOffset: 5 }, TOL_F32],
      [{ M: 3, N: 65, K: 96, ...f32io, padY: 7, yOffset: 11, opts: { kind: 'gemv' } }, TOL_F32],
      [{ M: 1, N: 77, K: 256, weight: 'f16', input: 'f32', output: 'f32', accumulate: true, bias: true }, TOL_F32],
      [{ M: 1, N: 99, K: 200, ...f16io, bias: true }, TOL_F16],
      [{ M: 1, N: 33, K: 75, ...f16io, xOffset: 3 }, TOL_F16],
      [{ M: 5, N: 40, K: 64, ...f32io, opts: { kind: 'gemv', gemv: { tokens: 2, rows: 3, workgroupSize: 64 } } }, TOL_F32],
    ];
    for (const [c, tol] of cases) {
      if (c.weight === 'f16' && c.output === 'f16' && !gpu!.features.shaderF16) continue;
      check(await runCase(gpu!, c, rng), tol);
    }
  });

  it.skipIf(!gpuNoSubgroups)('GEMV with the tree reduction (no subgroups)', async () => {
    const rng = new Rng(testSeed('matmul gemv tree'));
    check(await runCase(gpuNoSubgroups!, { M: 1, N: 70, K: 256, ...f32io, bias: true }, rng), TOL_F32);
    check(await runCase(gpuNoSubgroups!, { M: 2, N: 21, K: 37, ...f32io, accumulate: true, opts: { kind: 'gemv', gemv: { rows: 2, tokens: 2 } } }, rng), TOL_F32);
  });

  it('tiled GEMM: ragged M, N, K, strides, bias, accumulate, f16 and f32', async () => {
    const rng = new Rng(testSeed('matmul tiled'));
    const cases: [Case, number][] = [
      [{ M: 37, N: 75, K: 61, ...f32io, bias: true, opts: { kind: 'tiled' } }, TOL_F32],
      [{ M: 70, N: 130, K: 128, ...f32io, accumulate: true, padX: 4, xOffset: 8, padY: 2, yOffset: 1, opts: { kind: 'tiled' } }, TOL_F32],
      [{ M: 2, N: 64, K: 16, weight: 'f16', input: 'f32', output: 'f32', opts: { kind: 'tiled' } }, TOL_F32],
      [{ M: 33, N: 50, K: 45, ...f16io, bias: true, accumulate: true, opts: { kind: 'tiled' } }, TOL_F16],
    ];
    for (const [c, tol] of cases) {
      if (c.output === 'f16' && !gpu!.features.shaderF16) continue;
      check(await runCase(gpu!, c, rng), tol);
    }
  });

  it('direct (barrier-free) kernel: vector and scalar K, ragged, bias, accumulate, f16 and f32', async () => {
    const rng = new Rng(testSeed('matmul direct'));
    const cases: [Case, number][] = [
      [{ M: 37, N: 75, K: 64, ...f32io, bias: true, padX: 4, xOffset: 8, opts: { kind: 'direct' } }, TOL_F32],
      [{ M: 1, N: 130, K: 61, ...f32io, accumulate: true, padY: 3, yOffset: 2, opts: { kind: 'direct' } }, TOL_F32],
      [{ M: 6, N: 50, K: 44, weight: 'f16', input: 'f32', output: 'f32', bias: true, accumulate: true, opts: { kind: 'direct' } }, TOL_F32],
      [{ M: 9, N: 33, K: 45, ...f16io, bias: true, opts: { kind: 'direct', direct: { TM: 2, TN: 3, workgroupSize: 16 } } }, TOL_F16],
    ];
    for (const [c, tol] of cases) {
      if (c.output === 'f16' && !gpu!.features.shaderF16) continue;
      check(await runCase(gpu!, c, rng), tol);
    }
  });

  it('weights split across bindings (row chunks) give the same result', async () => {
    const rng = new Rng(testSeed('matmul chunks'));
    const maxBindingBytes = 4096; // forces several chunks
    for (const kind of ['gemv', 'tiled', 'direct'] as const) {
      check(await runCase(gpu!, { M: kind === 'gemv' ? 1 : 9, N: 97, K: 64, ...f32io, bias: true, opts: { kind, maxBindingBytes } }, rng), TOL_F32);
      if (gpu!.features.shaderF16) {
        check(await runCase(gpu!, { M: 3, N: 91, K: 33, weight: 'f16', input: 'f32', output: 'f32', accumulate: true, opts: { kind, maxBindingBytes: 9000 } }, rng), TOL_F32);
      }
    }
  });

  it.skipIf(!gpu?.features.shaderF16)('subgroup-matrix GEMM, emulated (same kernel, plain-WGSL builtins): ragged, vector and scalar staging', async () => {
    const rng = new Rng(testSeed('matmul sgmat emulated'));
    // A tiny 4×4×4 shape keeps lavapipe's shader compilation of the emulation to seconds; the
    // tiling code is generic in the shape (16×16×16 on NVIDIA is exercised by the H200 bench).
    const emu = { shape: { M: 4, N: 4, K: 4 }, subgroupSize: 4 };
    const opts: Partial<LinearOptions> = { kind: 'subgroup-matrix', emulateSubgroupMatrix: emu, subgroupMatrix: { perSubgroup: [1, 2], subgroups: [2, 2], kTile: 8 } };
    const cases: [Case, number][] = [
      [{ M: 37, N: 45, K: 40, weight: 'f16', input: 'f16', output: 'f32', bias: true, padX: 8, xOffset: 16, opts }, TOL_F32],
      [{ M: 20, N: 30, K: 29, weight: 'f16', input: 'f32', output: 'f16', bias: true, accumulate: true, padX: 3, padY: 2, yOffset: 4, opts }, TOL_F16],
    ];
    for (const [c, tol] of cases) check(await runCase(gpu!, c, rng), tol);
  });

  it.skipIf(!gpu?.features.shaderF16)('subgroup-matrix GEMM, emulated, double-buffered staging: odd and even K-tile counts, f16 and f32 x, ragged tiles', async () => {
    const rng = new Rng(testSeed('matmul sgmat emulated double-buffered'));
    const emu = { shape: { M: 4, N: 4, K: 4 }, subgroupSize: 4 };
    // kTile 8: K = 40 is 5 tiles (the last computed from buffer 0), K = 48 is 6, K = 8 is one
    // (no prefetch at all); with 16 threads every thread stages several groups of 8.
    const opts = (perSubgroup: [number, number]): Partial<LinearOptions> => ({
      kind: 'subgroup-matrix',
      emulateSubgroupMatrix: emu,
      subgroupMatrix: { perSubgroup, subgroups: [2, 2], kTile: 8, doubleBuffer: true },
    });
    const cases: [Case, number][] = [
      [{ M: 37, N: 45, K: 40, weight: 'f16', input: 'f16', output: 'f32', bias: true, padX: 8, xOffset: 16, opts: opts([1, 2]) }, TOL_F32],
      [{ M: 21, N: 38, K: 48, weight: 'f16', input: 'f32', output: 'f16', accumulate: true, padY: 2, yOffset: 4, opts: opts([2, 2]) }, TOL_F16],
      [{ M: 9, N: 70, K: 8, weight: 'f16', input: 'f16', output: 'f32', opts: opts([1, 4]) }, TOL_F32],
      // Unrolled code (what real GPUs run: constant subgroup-matrix indices), single- and double-buffered.
      [{ M: 19, N: 21, K: 24, weight: 'f16', input: 'f16', output: 'f32', bias: true, opts: { ...opts([2, 2]), compact: false } }, TOL_F32],
      [{ M: 19, N: 21, K: 24, weight: 'f16', input: 'f32', output: 'f32', opts: { ...opts([2, 1]), subgroupMatrix: { perSubgroup: [2, 1], subgroups: [2, 2], kTile: 8, doubleBuffer: false }, compact: false } }, TOL_F32],
    ];
    for (const [c, tol] of cases) check(await runCase(gpu!, c, rng), tol);
  });

  it.skipIf(!gpu || !pickSubgroupMatrixConfig(gpu))('subgroup-matrix GEMM on the adapter\'s tensor cores', async () => {
    const rng = new Rng(testSeed('matmul sgmat'));
    console.log(`subgroup matrix configs: ${JSON.stringify(gpu!.adapterInfo.subgroupMatrixConfigs)}`);
    const cases: [Case, number][] = [
      [{ M: 37, N: 45, K: 40, weight: 'f16', input: 'f16', output: 'f32', bias: true, opts: { kind: 'subgroup-matrix' } }, TOL_F32],
      [{ M: 130, N: 200, K: 264, weight: 'f16', input: 'f32', output: 'f32', accumulate: true, opts: { kind: 'subgroup-matrix' } }, TOL_F32],
      [{ M: 70, N: 96, K: 33, ...f16io, opts: { kind: 'subgroup-matrix' } }, TOL_F16],
    ];
    for (const [c, tol] of cases) check(await runCase(gpu!, c, rng), tol);
  });
});

// Dawn's null backend exposes chromium-experimental-subgroup-matrix without running anything: the
// real tensor-core kernel (not only its emulation) must at least pass Tint and pipeline creation.
const nullGpu = await acquireGpu({ dawnToggles: ['backend=null', 'enable-dawn-features=allow_unsafe_apis'], ifUnavailable: 'null' }).catch(() => null);
afterAll(() => nullGpu?.destroy());

describe.skipIf(!nullGpu?.features.subgroupMatrix)('tensor-core matmul WGSL on Dawn\'s null backend (compile only)', () => {
  it('every operand type combination compiles; a tiling within the null device\'s limits makes a pipeline', async () => {
    const base = { kind: 'subgroup-matrix', weight: 'f16', compact: false, shape: { M: 16, N: 16, K: 16 }, subgroupSize: 32, kTile: 32, emulate: false } as const;
    for (const input of ['f16', 'f32'] as const) {
      for (const output of ['f16', 'f32'] as const) {
        for (const vector of [true, false]) {
          for (const doubleBuffer of [false, true]) {
            const v: SubgroupMatrixVariant = { ...base, input, output, vector, doubleBuffer, perSubgroup: [2, 4], subgroups: [2, 2] };
            await compileShader(nullGpu!.device, `matmul/${variantName(v)}`, matmulWgsl(v));
          }
        }
      }
    }
    const sg = nullGpu!.adapterInfo.subgroupMaxSize || 32;
    for (const doubleBuffer of [false, true]) {
      const small: SubgroupMatrixVariant = { ...base, input: 'f16', output: 'f32', vector: true, doubleBuffer, perSubgroup: [1, 2], subgroups: [1, 2], subgroupSize: sg };
      await nullGpu!.pipelines.computePipeline({ name: `matmul/${variantName(small)}`, code: matmulWgsl(small), bindings: [['uniform', 'read-only-storage', 'read-only-storage', 'read-only-storage', 'storage']] });
    }
  });
});
