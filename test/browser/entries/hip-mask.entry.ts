/**
 * Browser entry: HiP mask estimation on the page's GPU (SwiftShader in CI) for a seeded random
 * problem; returns the mask so the Node side can compare it with the CPU reference.
 */
import type { HipOptions } from '../../../src/attention/options.js';
import type { GpuContext } from '../../../src/gpu/index.js';
import { createHipMaskEstimator, readGpuHipMask, type HipMaskPathOption } from '../../../src/kernels/hip-mask/index.js';
import { randomCpuProblem, uploadProblem, type MaskProblemSpec } from '../../../src/kernels/hip-mask/testing.js';

export interface HipMaskEntryArgs {
  seed: number;
  spec: MaskProblemSpec;
  options: Partial<HipOptions>;
  path: HipMaskPathOption;
}

export default async function run(gpu: GpuContext, args: HipMaskEntryArgs) {
  const cpu = randomCpuProblem(args.seed, args.spec, 'f32');
  const est = await createHipMaskEstimator(gpu, { dtype: 'f32', headDim: args.spec.headDim, options: args.options, path: args.path, kinds: ['prefill'] });
  const p = uploadProblem(gpu, cpu, args.spec, 'f32');
  const t0 = performance.now();
  const enc = gpu.device.createCommandEncoder();
  const mask = est.encode(enc, p);
  gpu.device.queue.submit([enc.finish()]);
  const got = await readGpuHipMask(gpu, mask);
  const ms = performance.now() - t0;
  const v = est.variants.prefill;
  p.destroy();
  est.destroy();
  return {
    blockStarts: Array.from(got.blockStarts),
    variant: `${v.path}/${v.dtype}${v.accurate ? '/compensated' : ''} rows ${v.rowsCap} wg ${v.workgroupSize}`,
    ms,
  };
}
