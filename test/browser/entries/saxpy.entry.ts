/** Browser entry: saxpy on seeded random data; the test regenerates the data and checks. */
import type { GpuContext } from '../../../src/gpu/index.js';
import { randomFloat32, seededRandom } from '../../gpu-helpers.js';
import { saxpyGpu } from '../../kernels/saxpy.js';

export interface SaxpyArgs {
  seed: number;
  n: number;
}

export function saxpyInputs(args: SaxpyArgs): { a: number; x: Float32Array; y: Float32Array } {
  const rand = seededRandom(args.seed);
  const x = randomFloat32(rand, args.n, -10, 10);
  const y = randomFloat32(rand, args.n, -10, 10);
  return { a: Math.fround((rand() - 0.5) * 8), x, y };
}

export default async function run(gpu: GpuContext, args: SaxpyArgs) {
  const { a, x, y } = saxpyInputs(args);
  const got = await saxpyGpu(gpu, a, x, y);
  // Send the f32 bits, so the comparison in Node is exact about what the GPU wrote.
  return { n: got.length, bits: Array.from(new Uint32Array(got.buffer)), subgroupSize: gpu.adapterInfo.subgroupMaxSize };
}
