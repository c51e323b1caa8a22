/**
 * HiP in the model runtime, WebGPU against the CPU: hip-testbed-mini with selective HiP options
 * (the masks really choose: 32 of ~300 keys), a prefill in chunks and then decoding with cached
 * masks refreshed every few tokens over the query block ending at the new token. Both backends
 * run the same tokens (teacher forcing with the CPU's greedy choice); the logits of every step
 * agree (f32 storage on the GPU). And with topK covering the whole context, HiP's logits equal
 * dense attention's (hip-testbed-mini, and hip-testbed-28m from ../shared when present).
 */
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { getTestGpu, loudNotice, testSeed } from '../../test/gpu-helpers.js';
import { Rng } from '../util/rng.js';
import { loadModel } from './load.js';
import type { HipModel } from './model.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

const HIP = { topK: 32, blockSizeQ: 16, blockSizeK: 2, sinkTokens: 4, slidingWindow: 32, refreshInterval: 4, denseLayers: 1 };

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/**
 * Prefills `prompt` on both models, then decodes `steps` tokens (the first model's greedy
 * choice, fed to both); returns the largest |logit difference| over every step.
 */
async function teacherForcedDiff(a: HipModel, b: HipModel, prompt: number[], steps: number): Promise<number> {
  let la = await a.forward(prompt);
  let lb = await b.forward(prompt);
  let worst = maxAbsDiff(la, lb);
  for (let step = 0; step < steps; step++) {
    const tok = argmax(la);
    la = await a.forward([tok]);
    lb = await b.forward([tok]);
    worst = Math.max(worst, maxAbsDiff(la, lb));
  }
  return worst;
}

describe('HiP prefill and decoding in the runtime: WebGPU = CPU', () => {
  it.skipIf(!gpu)('hip-testbed-mini, selective HiP, 290-token prompt in chunks of 64, 14 decoded tokens', async () => {
    const seed = testSeed('hip runtime');
    const rng = new Rng(seed);
    const attention = { method: 'hip' as const, hip: HIP };
    const cpu = await loadModel('models/hip-testbed-mini', { device: 'cpu', attention, contextLength: 512 });
    const web = await loadModel('models/hip-testbed-mini', { gpu: gpu!, dtype: 'f32', attention, contextLength: 512, prefillChunk: 64 });
    try {
      const vocab = cpu.config.vocabSize;
      const prompt = Array.from({ length: 290 }, () => 3 + rng.int(vocab - 3));
      const worst = await teacherForcedDiff(cpu, web, prompt, 14);
      console.log(`[hip runtime] max |logit diff| WebGPU f32 vs CPU over prefill + 14 decode steps: ${worst.toExponential(2)}`);
      expect(worst).toBeLessThanOrEqual(2e-3);
    } finally {
      await cpu.dispose();
      await web.dispose();
    }
  });
});

describe('HiP with topK ≥ context = dense, whole model', () => {
  const cases: [string, string][] = [['hip-testbed-mini', 'models/hip-testbed-mini']];
  if (existsSync('../shared/models/hip-testbed-28m/config.json')) cases.push(['hip-testbed-28m', '../shared/models/hip-testbed-28m']);
  else loudNotice(['hip-runtime.test: hip-testbed-28m not checked: ../shared/models/hip-testbed-28m not found (the shared test data is not next to this checkout)']);
  it.each(cases)('%s: 200-token prompt + 6 decoded tokens, CPU (and WebGPU f32)', async (_name, dir) => {
    const rng = new Rng(testSeed(`hip = dense ${_name}`));
    const covering = { method: 'hip' as const, hip: { topK: 256, blockSizeQ: 16, blockSizeK: 2, sinkTokens: 4, slidingWindow: 16, refreshInterval: 4, denseLayers: 0 } };
    const devices = gpu ? [{ device: 'cpu' as const }, { gpu, dtype: 'f32' as const }] : [{ device: 'cpu' as const }];
    for (const dev of devices) {
      const dense = await loadModel(dir, { ...dev, attention: 'dense', contextLength: 256 });
      const hip = await loadModel(dir, { ...dev, attention: covering, contextLength: 256 });
      try {
        const prompt = Array.from({ length: 200 }, () => 3 + rng.int(dense.config.vocabSize - 3));
        const worst = await teacherForcedDiff(dense, hip, prompt, 6);
        console.log(`[hip = dense] ${_name} ${'gpu' in dev ? 'WebGPU f32' : 'CPU'}: max |logit diff| ${worst.toExponential(2)}`);
        expect(worst).toBeLessThanOrEqual(1e-4);
      } finally {
        await dense.dispose();
        await hip.dispose();
      }
    }
  });
});
