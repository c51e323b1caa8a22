/**
 * Prints what WebGPU offers on this machine: adapter, features, limits, subgroup-matrix
 * configurations, and runs a tiny f16 and f32 kernel as a smoke test. Usage:
 *   node dist/bench/gpu-probe.js [--json FILE]
 */
import { writeFile } from 'node:fs/promises';
import { acquireGpu, createStorageBuffer, readFloat32, bindBuffers } from '../src/gpu/index.js';

const gpu = await acquireGpu();
const report = {
  adapter: gpu.adapterInfo,
  features: gpu.features,
  deviceFeatures: [...gpu.device.features].sort(),
  limits: gpu.limits,
};
console.log(JSON.stringify(report, null, 2));
// smoke test: f32 kernel (and f16 if present)
for (const f16 of gpu.features.shaderF16 ? [false, true] : [false]) {
  const code = `${f16 ? 'enable f16;' : ''}
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let x = ${f16 ? 'f32(f16(g.x) * 0.5h)' : 'f32(g.x) * 0.5'};
  if (g.x < arrayLength(&y)) { y[g.x] = x; }
}`;
  const p = await gpu.pipelines.computePipeline({ name: `probe/${f16 ? 'f16' : 'f32'}`, code, bindings: [['storage']] });
  const buf = createStorageBuffer(gpu, new Float32Array(256));
  const enc = gpu.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(p.pipeline);
  pass.setBindGroup(0, bindBuffers(gpu.device, p, [buf]));
  pass.dispatchWorkgroups(4);
  pass.end();
  gpu.device.queue.submit([enc.finish()]);
  const y = await readFloat32(gpu, buf, 256);
  console.log(`smoke ${f16 ? 'f16' : 'f32'}: y[0..3] = ${[...y.subarray(0, 4)].join(', ')}, y[255] = ${y[255]}`);
}
const json = process.argv.indexOf('--json');
if (json > 0) await writeFile(process.argv[json + 1]!, JSON.stringify(report, null, 2));
gpu.destroy();
