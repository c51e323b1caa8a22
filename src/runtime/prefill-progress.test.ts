/**
 * Prefill progress (the `onPrefillProgress` generation option) on hip-testbed-mini: one report
 * per prefill chunk, tokens done rising to the prompt's length, all before the first token; the
 * event loop runs between chunks (a page repaints its progress bar there); and the callback does
 * not change what is generated. CPU always; WebGPU (where there is an adapter) with its chunk.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { getTestGpu, testSeed } from '../../test/gpu-helpers.js';
import { LlamaCpu } from '../model/llama-cpu.js';
import { openModelPath } from '../model/node-load.js';
import { loadLlamaWeightsF32 } from '../model/weights.js';
import { Rng } from '../util/rng.js';
import { loadModel } from './load.js';
import type { HipModel } from './model.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

type Event = { kind: 'progress'; done: number; total: number } | { kind: 'tick' } | { kind: 'token' };

/** Generates with a progress callback and records its reports, tokens, and macrotasks that ran in between. */
async function recordRun(model: HipModel, ids: number[], chunkSize: number): Promise<{ events: Event[]; generated: number[] }> {
  const events: Event[] = [];
  const r = await model.generate(
    { ids },
    {
      maxNewTokens: 4,
      temperature: 0,
      chunkSize,
      onPrefillProgress: (done, total) => {
        events.push({ kind: 'progress', done, total });
        // Runs only if the prefill yields to the event loop before its next chunk.
        setImmediate(() => events.push({ kind: 'tick' }));
      },
      onToken: () => events.push({ kind: 'token' }),
    },
  );
  return { events, generated: r.ids };
}

/** What the reports must be: after each chunk of `chunk` tokens, the tokens done so far. */
function expectedReports(total: number, chunk: number): { done: number; total: number }[] {
  const out: { done: number; total: number }[] = [];
  for (let done = Math.min(chunk, total); ; done = Math.min(done + chunk, total)) {
    out.push({ done, total });
    if (done === total) return out;
  }
}

function checkEvents(events: Event[], total: number, chunk: number): void {
  const progress = events.filter((e) => e.kind === 'progress').map((e) => ({ done: e.done, total: e.total }));
  expect(progress).toEqual(expectedReports(total, chunk));
  const lastProgress = events.findLastIndex((e) => e.kind === 'progress');
  const firstToken = events.findIndex((e) => e.kind === 'token');
  expect(firstToken).toBeGreaterThan(lastProgress);
  // Between two reports the event loop ran other tasks (an immediate set at the earlier report).
  const at = events.flatMap((e, i) => (e.kind === 'progress' ? [i] : []));
  for (let j = 1; j < at.length; j++) expect(events.slice(at[j - 1], at[j]).some((e) => e.kind === 'tick')).toBe(true);
}

describe('onPrefillProgress', () => {
  it('CPU: one report per chunk up to the prompt length, the event loop runs between them, and the output is unchanged', async () => {
    const seed = testSeed('prefill progress cpu');
    const rng = new Rng(seed);
    const model = await loadModel('models/hip-testbed-mini', { device: 'cpu', attention: 'hip', contextLength: 512 });
    try {
      const total = 120 + rng.int(120);
      const chunk = 16 + rng.int(48);
      const ids = Array.from({ length: total }, () => 3 + rng.int(model.config.vocabSize - 3));
      const { events, generated } = await recordRun(model, ids, chunk);
      console.log(`[prefill progress] cpu: ${total} tokens in chunks of ${chunk}: ${events.filter((e) => e.kind === 'progress').length} reports`);
      checkEvents(events, total, chunk);
      const plain = await model.generate({ ids }, { maxNewTokens: 4, temperature: 0, chunkSize: chunk });
      expect(generated).toEqual(plain.ids);
      // A prompt that fits one chunk: one report, done = total.
      const short = ids.slice(0, Math.min(chunk, 20));
      expect((await recordRun(model, short, chunk)).events.filter((e) => e.kind === 'progress')).toEqual([{ kind: 'progress', done: short.length, total: short.length }]);
    } finally {
      await model.dispose();
    }
  });

  it('LlamaCpu.forward: the same reports from its own chunk loop', async () => {
    const rng = new Rng(testSeed('prefill progress LlamaCpu'));
    const m = await openModelPath('models/hip-testbed-mini');
    try {
      const lm = new LlamaCpu(m.config, await loadLlamaWeightsF32(m.config, m.store), { capacity: 256 });
      const total = 40 + rng.int(100);
      const chunk = 8 + rng.int(24);
      const seen: { done: number; total: number }[] = [];
      lm.forward(Array.from({ length: total }, () => 3 + rng.int(m.config.vocabSize - 3)), { chunkSize: chunk, onProgress: (done, all) => seen.push({ done, total: all }) });
      expect(seen).toEqual(expectedReports(total, chunk));
    } finally {
      await m.store.close();
    }
  });

  it.skipIf(!gpu)('WebGPU: one report per chunk (the smaller of chunkSize and prefillChunk), and the output is unchanged', async () => {
    const seed = testSeed('prefill progress webgpu');
    const rng = new Rng(seed);
    const prefillChunk = 48;
    const model = await loadModel('models/hip-testbed-mini', { gpu: gpu!, dtype: 'f32', attention: 'hip', contextLength: 512, prefillChunk });
    try {
      const total = 100 + rng.int(100);
      const ids = Array.from({ length: total }, () => 3 + rng.int(model.config.vocabSize - 3));
      const { events, generated } = await recordRun(model, ids, 128);
      checkEvents(events, total, prefillChunk);
      const plain = await model.generate({ ids }, { maxNewTokens: 4, temperature: 0, chunkSize: 128 });
      expect(generated).toEqual(plain.ids);
    } finally {
      await model.dispose();
    }
  });
});
