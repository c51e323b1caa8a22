/**
 * The decoding-step mask on the GPU: the twin of `maskForDecodeStep` (src/attention/mask.ts).
 * Between refreshes, a step `shift` tokens after the refresh reads the refresh's selected
 * blocks and (option `shiftedBlocks`, default) the same blocks shifted right by `shift` — where
 * a head that copies text reads next. One workgroup per (batch, head, query block) row merges
 * the row's ascending starts A with A + shift into 2·n slots, −1 padded, ties unshifted first:
 * every start finds its output slot as its own index plus its rank in the other list (binary
 * search), so the merge needs no synchronisation. Exactly `mergeShiftedStarts`.
 *
 *     const shifter = await createDecodeShift(gpu);
 *     const stepMask = shifter.encode(encoder, refreshMask, position); // before the attention reads it
 */
import { decodeStepSpans, stepsSinceRefresh } from '../../attention/mask.js';
import { ShapeError } from '../../errors.js';
import { bindBuffers, createStorageBuffer, createUniformBuffer, defineUniforms, type CompiledPipeline, type GpuContext } from '../../gpu/index.js';
import type { GpuHipMask } from '../types.js';
import type { PassSource } from './index.js';

const ShiftParams = defineUniforms('Params', { rows: 'u32', n: 'u32', shift: 'u32' });
const WG = 64;

export function decodeShiftWgsl(): string {
  return /* wgsl */ `
${ShiftParams.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> SRC: array<i32>;
@group(0) @binding(2) var<storage, read_write> DST: array<i32>;

// Starts of the row at \`base\` that are used (≥ 0): a prefix.
fn validCount(base: u32) -> u32 {
  var lo = 0u;
  var hi = P.n;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (SRC[base + mid] >= 0) { lo = mid + 1u; } else { hi = mid; }
  }
  return lo;
}

// How many of the row's first nv starts are < x (or ≤ x when inclusive).
fn rankOf(base: u32, nv: u32, x: i32, inclusive: bool) -> u32 {
  var lo = 0u;
  var hi = nv;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    let v = SRC[base + mid];
    if (v < x || (inclusive && v == x)) { lo = mid + 1u; } else { hi = mid; }
  }
  return lo;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  if (row >= P.rows) { return; }
  let base = row * P.n;
  let out = 2u * base;
  let s = i32(P.shift);
  let nv = validCount(base);
  for (var j = lid; j < nv; j += ${WG}u) {
    let a = SRC[base + j];
    // a goes after the shifted starts below it; a + s after the starts up to it (ties: unshifted first)
    DST[out + j + rankOf(base, nv, a - s, false)] = a;
    DST[out + j + rankOf(base, nv, a + s, true)] = a + s;
  }
  for (var j = 2u * nv + lid; j < 2u * P.n; j += ${WG}u) {
    DST[out + j] = -1;
  }
}`;
}

export interface DecodeShift {
  /**
   * Records the mask that the decoding step at key position `position` reads (its own compute
   * pass when blocks are shifted): `refreshMask` itself at the refresh; else its window reaching
   * back to the refresh's and, with `shiftedBlocks`, its sink reaching `shift` further
   * (decodeStepSpans) and the shifted blocks, in a buffer of this object — valid until the next
   * `encode` runs, so record the attention that reads it before encoding the next step mask.
   */
  encode(encoder: PassSource, refreshMask: GpuHipMask, position: number): GpuHipMask;
  destroy(): void;
}

export async function createDecodeShift(gpu: GpuContext): Promise<DecodeShift> {
  const pipeline: CompiledPipeline = await gpu.pipelines.computePipeline({
    name: 'hip-mask/decode-shift',
    code: decodeShiftWgsl(),
    bindings: [['uniform', 'read-only-storage', 'storage']],
  });
  let out: GPUBuffer | null = null;
  const retired: GPUBuffer[] = []; // outgrown buffers, still referenced by recorded commands until destroy()
  const uniforms = new Map<string, GPUBuffer>();
  return {
    encode(encoder, mask, position) {
      const windowed = decodeStepSpans(mask, position);
      const shift = stepsSinceRefresh(mask, position);
      if (shift === 0 || !mask.options.shiftedBlocks) return windowed;
      const n = mask.blocksPerQuery;
      const rows = mask.batch * mask.heads * mask.numQueryBlocks;
      if (rows > gpu.device.limits.maxComputeWorkgroupsPerDimension) {
        throw new ShapeError(`hip decode shift: ${rows} mask rows exceed the device's ${gpu.device.limits.maxComputeWorkgroupsPerDimension} workgroups per dispatch`);
      }
      const bytes = rows * 2 * n * 4;
      if (!out || out.size < bytes) {
        if (out) retired.push(out);
        out = createStorageBuffer(gpu, bytes, { label: 'hip decode-step mask (shifted blocks)' });
      }
      const key = `${rows},${n},${shift}`;
      let params = uniforms.get(key);
      if (!params) {
        params = createUniformBuffer(gpu, ShiftParams, { rows, n, shift }, `hip decode shift ${key}`);
        uniforms.set(key, params);
      }
      const pass = 'encoder' in encoder ? encoder.beginComputePass('hip decode shift') : encoder.beginComputePass({ label: 'hip decode shift' });
      pass.setPipeline(pipeline.pipeline);
      pass.setBindGroup(0, bindBuffers(gpu.device, pipeline, [params, { buffer: mask.buffer, size: rows * n * 4 }, { buffer: out, size: bytes }]));
      pass.dispatchWorkgroups(rows);
      pass.end();
      return { ...windowed, buffer: out, blocksPerQuery: 2 * n };
    },
    destroy() {
      for (const b of [...retired, ...(out ? [out] : [])]) b.destroy();
      retired.length = 0;
      out = null;
      for (const b of uniforms.values()) b.destroy();
      uniforms.clear();
    },
  };
}
