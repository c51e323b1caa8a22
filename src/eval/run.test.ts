import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AttentionMethod } from '../attention/method.js';
import { loadModel } from '../runtime/load.js';
import { tokenNll } from './metrics.js';
import { greedyContinuation, isCorrect, runPerplexity, runRetrieval } from './run.js';
import type { RetrievalTask } from './prompts.js';

const root = join(import.meta.dirname, '..', '..');
const stories = join(root, 'models', 'stories260K', 'stories260K.gguf');
const text = readFileSync(join(root, 'data', 'northanger-abbey-ch1-7.txt'), 'utf8');
const load = (method: AttentionMethod, ctx: number) => loadModel(stories, { device: 'cpu', attention: method, contextLength: ctx });

describe('eval runners on stories260K', () => {
  it('greedyContinuation (chunked prefill + argmax) = generate with temperature 0', async () => {
    const model = await load('hip', 1024);
    try {
      const ids = model.encode('Once upon a time, there was a little dog. '.repeat(30)).slice(0, 700);
      const mine = await greedyContinuation(model, ids, 12);
      const ref = await model.generate({ ids }, { maxNewTokens: 12, temperature: 0 });
      expect(mine.ids).toEqual(ref.ids);
      expect(mine.text).toBe(ref.text);
      // feeding the last prompt token as a decoding step runs HiP's decode path; here (700 tokens,
      // every key within sink + window + top-k) it must give the same tokens
      const split = await greedyContinuation(model, ids, 12, { lastTokenAsDecode: true });
      expect(split.ids).toEqual(ref.ids);
    } finally {
      await model.dispose();
    }
  });

  it('runPerplexity: windows of BOS + tokens, chunked scoring = one-shot NLL of every token', async () => {
    const context = 600; // two prefill chunks
    const res = await runPerplexity([{ name: 'n', text }], { methods: ['dense'], contexts: [context], maxWindows: 1 }, load);
    expect(res.rows).toHaveLength(1);
    const row = res.rows[0]!;
    expect(row.tokens).toBe(context);
    const model = await load('dense', context);
    try {
      const toks = model.tokenizer.encode(text, { addBos: false }).slice(0, context);
      const input = [model.tokenizer.bosTokenId!, ...toks.slice(0, -1)];
      const logits = await model.forward(input, { logits: 'all', chunkSize: context });
      const V = model.config.vocabSize;
      let sum = 0;
      for (let i = 0; i < context; i++) sum += tokenNll(logits, toks[i]!, i * V, V);
      expect(row.nll).toBeCloseTo(sum / context, 4);
      expect(row.ppl).toBeCloseTo(Math.exp(sum / context), 3);
    } finally {
      await model.dispose();
    }
  });

  it('runRetrieval: one row per (method, length, depth), the same prompts for every method, aborts between steps', async () => {
    let builds = 0;
    const task: RetrievalTask = {
      name: 'echo',
      build(length, depth, trial) {
        builds++;
        return { ids: [1, ...Array.from({ length: length - 10 }, (_, i) => 3 + ((i + trial) % 50))], answer: String(trial), check: 'first-number', maxNewTokens: 3, needle: [1, 2] };
      },
    };
    const cells: string[] = [];
    const res = await runRetrieval(() => task, { methods: ['dense', 'streaming'], lengths: [64, 96], depths: [0, 1], trials: 2 }, load, { onCell: (r) => void cells.push(`${r.attention}/${r.length}/${r.depth}`) });
    expect(res.interrupted).toBe(false);
    expect(res.rows).toHaveLength(8);
    expect(cells[0]).toBe('dense/64/0');
    expect(builds).toBe(8); // built once, shared by both methods
    expect(res.outputs).toHaveLength(16);
    expect(res.timings.map((t) => t.attention)).toEqual(['dense', 'streaming']);
    const ac = new AbortController();
    const part = await runRetrieval(() => task, { methods: ['dense'], lengths: [64], depths: [0, 0.5, 1], trials: 2 }, load, {
      signal: ac.signal,
      onCell: () => ac.abort(),
    });
    expect(part.interrupted).toBe(true);
    expect(part.rows).toHaveLength(1);
    // one trial of a run, alone: the same prompt (hence answer) as in the full run
    const one = await runRetrieval(() => task, { methods: ['dense'], lengths: [64], depths: [1], trials: 1, firstTrial: 1 }, load);
    const inFull = res.outputs.find((o) => o.attention === 'dense' && o.length === 64 && o.depth === 1 && o.trial === 1)!;
    expect(one.outputs).toHaveLength(1);
    expect(one.outputs[0]!.trial).toBe(1);
    expect(one.outputs[0]!.answer).toBe(inFull.answer);
    expect(one.outputs[0]!.output).toBe(inFull.output);
    await expect(runRetrieval(() => task, { methods: ['dense'], lengths: [64], depths: [1], trials: 1, firstTrial: -1 }, load)).rejects.toThrow(/first trial/);
  });

  it('isCorrect: first number for passkeys, substring otherwise', () => {
    expect(isCorrect({ check: 'first-number', answer: '123' }, ' 123.')).toBe(true);
    expect(isCorrect({ check: 'first-number', answer: '123' }, ' 1234')).toBe(false);
    expect(isCorrect({ check: 'substring', answer: 'Dolores Park' }, 'in dolores park.')).toBe(true);
  });
});
