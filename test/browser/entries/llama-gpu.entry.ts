/**
 * Browser entry: loads hip-testbed-mini from files served over http (fetch → Blob → the same
 * safetensors / tokenizer readers as Node), runs LlamaGpu on the page's WebGPU device
 * (SwiftShader: f32 storage) on a prompt, then decodes greedily. Returns the prompt's last
 * logits as f32 bits and the generated ids.
 */
import type { GpuContext } from '../../../src/gpu/index.js';
import { mapDirectory } from '../../../src/model/byte-source.js';
import { argmax } from '../../../src/model/cpu-ops.js';
import { LlamaGpu } from '../../../src/model/llama-gpu.js';
import { openHfModel } from '../../../src/model/load.js';

export interface LlamaGpuBrowserArgs {
  base: string;
  files: string[];
  prompt: number[];
  steps: number;
}

export default async function run(gpu: GpuContext, args: LlamaGpuBrowserArgs) {
  const t0 = performance.now();
  const files = new Map<string, Blob>();
  for (const f of args.files) {
    const r = await fetch(`${args.base}/${f}`);
    if (!r.ok) throw new Error(`fetch ${f}: ${r.status}`);
    files.set(f, await r.blob());
  }
  const m = await openHfModel(mapDirectory('hip-testbed-mini (http)', files));
  const lm = await LlamaGpu.load(gpu, m.config, m.store, { capacity: 64 });
  const loadMs = performance.now() - t0;
  const t1 = performance.now();
  const logits = await lm.forward(args.prompt, { chunkSize: 16 });
  const prefillMs = performance.now() - t1;
  const ids: number[] = [];
  let next = argmax(logits);
  for (let s = 0; s < args.steps; s++) {
    ids.push(next);
    next = argmax(await lm.forward([next]));
  }
  const out = { weightType: lm.weightType, loadMs, prefillMs, totalMs: performance.now() - t0, logitsBits: Array.from(new Uint32Array(logits.buffer)), ids, text: m.tokenizer.decode(ids) };
  lm.destroy();
  return out;
}
