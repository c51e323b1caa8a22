/**
 * Browser entry: the attention kernels on the page's adapter (SwiftShader in CI: no shader-f16,
 * so the f32 path) against the CPU reference, computed in the page; returns error figures.
 */
import type { GpuContext } from '../../../src/gpu/index.js';
import { createAttentionKernels } from '../../../src/kernels/attention/index.js';
import { runAttentionCase, type CheckCase } from '../../../src/kernels/attention/check.js';

export interface AttentionBrowserArgs {
  seed: number;
  cases: (Omit<CheckCase, 'seed'> & { name: string; maxBindingBytes?: number })[];
}

export default async function run(gpu: GpuContext, args: AttentionBrowserArgs) {
  const dtype = gpu.features.shaderF16 ? 'f16' : 'f32';
  const results: { name: string; dtype: string; prefillPath: string; decodePath: string; maxRowRelError: number; maxAbsErrorRel: number; ms: number }[] = [];
  for (const [i, c] of args.cases.entries()) {
    const kernels = await createAttentionKernels(gpu, {
      dtype,
      headDim: c.shape.headDim,
      ...(c.maxBindingBytes ? { maxBindingBytes: c.maxBindingBytes } : {}),
    });
    try {
      const r = await runAttentionCase(gpu, kernels, { ...c, seed: args.seed + i });
      results.push({ name: c.name, dtype, prefillPath: kernels.prefillPath, decodePath: kernels.decodePath, maxRowRelError: r.maxRowRelError, maxAbsErrorRel: r.maxAbsErrorRel, ms: r.ms });
    } finally {
      kernels.destroy();
    }
  }
  return { results };
}
