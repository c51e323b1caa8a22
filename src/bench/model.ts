/**
 * The model benchmark behind `hipattn bench model`: prefill and decode tokens per second of a
 * whole model on the GPU, per context length and attention method, and the memory it holds.
 * The model is a checkpoint (path or Hub id) or a config with random weights generated on the
 * GPU (`llama3-8b`: Llama-3-8B's shapes — shapes are what matter for speed).
 */
import { type AttentionConfig, type AttentionMethod, resolveAttentionConfig } from '../attention/method.js';
import type { GpuContext } from '../gpu/index.js';
import { argmax } from '../model/cpu-ops.js';
import { LLAMA3_8B } from '../model/synthetic.js';
import type { ModelBackend } from '../runtime/backend.js';
import { createGpuBackend } from '../runtime/gpu-backend.js';
import { loadModel } from '../runtime/load.js';
import { Rng } from '../util/rng.js';

export const RANDOM_MODELS = { 'llama3-8b': LLAMA3_8B } as const;

export interface ModelBenchSpec {
  /** A model path / Hub id, or a key of RANDOM_MODELS. */
  model: string;
  contexts: number[];
  methods: AttentionMethod[];
  /** Tokens decoded after each prefill (greedy). Default 32. */
  decodeTokens?: number;
  /** Prefill chunk (tokens per forward step). Default 2048. */
  prefillChunk?: number;
  attention?: Omit<AttentionConfig, 'method'>;
  seed?: number;
}

export interface ModelBenchRow {
  model: string;
  context: number;
  method: AttentionMethod;
  prefillSeconds: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  /** Weights + KV cache + activations held on the GPU. */
  memoryBytes: number;
  error?: string;
}

async function open(gpu: GpuContext, spec: ModelBenchSpec, method: AttentionMethod, capacity: number): Promise<{ backend: ModelBackend; vocab: number; dispose: () => Promise<void> }> {
  const attention = resolveAttentionConfig({ ...spec.attention, method });
  const chunk = spec.prefillChunk ?? 2048;
  const random = RANDOM_MODELS[spec.model as keyof typeof RANDOM_MODELS];
  if (random) {
    const backend = await createGpuBackend(gpu, random, { randomSeed: spec.seed ?? 1 }, attention, capacity, { maxChunk: chunk });
    return { backend, vocab: random.vocabSize, dispose: () => backend.dispose() };
  }
  const model = await loadModel(spec.model, { gpu, attention, contextLength: capacity, prefillChunk: chunk });
  return { backend: model.backend, vocab: model.config.vocabSize, dispose: () => model.dispose() };
}

export async function runModelBenchmark(gpu: GpuContext, spec: ModelBenchSpec, onRow?: (row: ModelBenchRow) => void): Promise<ModelBenchRow[]> {
  const decode = spec.decodeTokens ?? 32;
  const chunk = spec.prefillChunk ?? 2048;
  const capacity = Math.max(...spec.contexts) + decode;
  const rows: ModelBenchRow[] = [];
  for (const method of spec.methods) {
    let m: Awaited<ReturnType<typeof open>> | null = null;
    try {
      m = await open(gpu, spec, method, capacity);
      // warm-up: compiles every pipeline of prefill and decode once
      await m.backend.forward(Array.from({ length: Math.min(chunk, 256) }, (_, i) => (i * 7919) % m!.vocab), { chunkSize: chunk });
      await m.backend.forward([1]);
      for (const context of spec.contexts) {
        m.backend.reset();
        const rng = new Rng((spec.seed ?? 1) + context);
        const ids = Array.from({ length: context }, () => rng.int(m!.vocab));
        const t0 = performance.now();
        let logits = await m.backend.forward(ids, { chunkSize: chunk });
        const prefillSeconds = (performance.now() - t0) / 1000;
        const t1 = performance.now();
        for (let i = 0; i < decode; i++) logits = await m.backend.forward([argmax(logits)]);
        const decodeSeconds = (performance.now() - t1) / 1000;
        const row: ModelBenchRow = {
          model: spec.model,
          context,
          method,
          prefillSeconds,
          prefillTokensPerSecond: context / prefillSeconds,
          decodeTokensPerSecond: decode / decodeSeconds,
          memoryBytes: m.backend.memoryBytes(),
        };
        rows.push(row);
        onRow?.(row);
      }
    } catch (e) {
      const row: ModelBenchRow = { model: spec.model, context: Number.NaN, method, prefillSeconds: Number.NaN, prefillTokensPerSecond: 0, decodeTokensPerSecond: 0, memoryBytes: 0, error: e instanceof Error ? e.message.split('\n')[0]!.slice(0, 200) : String(e) };
      rows.push(row);
      onRow?.(row);
    } finally {
      await m?.dispose();
    }
  }
  return rows;
}
