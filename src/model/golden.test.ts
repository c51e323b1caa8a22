/**
 * The CPU forward pass against transformers' float32 reference outputs (golden.json) of the two
 * testbed models: top-5 log-probabilities at every position, all final logits, greedy
 * continuations, and the tokenizer's ids.
 */
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loudNotice } from '../../test/gpu-helpers.js';
import { argmax, logSoftmax } from './cpu-ops.js';
import { LlamaCpu } from './llama-cpu.js';
import { openModelPath } from './node-load.js';
import { loadLlamaWeightsF32 } from './weights.js';

interface GoldenInput {
  name: string;
  text: string;
  input_ids: number[];
  top5_ids: number[][];
  top5_logprobs: number[][];
  final_logits: number[];
  greedy_continuation_32?: { ids: number[]; text: string };
  greedy_continuation_8?: { ids: number[]; text: string };
}
interface Golden {
  inputs: GoldenInput[];
  tokenizer: { text: string; ids: number[]; tokens: string[]; ids_default_encode: number[] }[];
}

const ALL_MODELS = [
  { name: 'hip-testbed-mini', dir: 'models/hip-testbed-mini' }, // shipped
  { name: 'hip-testbed-28m', dir: '../shared/models/hip-testbed-28m' }, // the shared test data, when next to the checkout
];
const MODELS = ALL_MODELS.filter((m) => existsSync(`${m.dir}/golden.json`));
const missing = ALL_MODELS.filter((x) => !MODELS.includes(x));
if (missing.length > 0) {
  loudNotice(missing.map((m) => `golden.test: ${m.name} not checked: ${m.dir}/golden.json not found (the shared test data is not next to this checkout)`));
}
const TOL = 2e-3;

describe.each(MODELS)('$name vs golden.json (float32, CPU)', ({ dir }) => {
  const golden = JSON.parse(readFileSync(`${dir}/golden.json`, 'utf8')) as Golden;
  const opened = openModelPath(dir);
  const model = opened.then(async (m) => ({ m, weights: await loadLlamaWeightsF32(m.config, m.store) }));

  it('tokenizer ids equal golden (raw and default encode, tokens, decode round trip)', async () => {
    const { tokenizer } = await opened;
    for (const t of golden.tokenizer) {
      expect(tokenizer.encode(t.text, { addBos: false })).toEqual(t.ids);
      expect(tokenizer.encode(t.text)).toEqual(t.ids_default_encode);
      expect(tokenizer.encode(t.text, { addBos: true })).toEqual(t.ids_default_encode);
      expect(t.ids.map((id) => tokenizer.idToToken(id))).toEqual(t.tokens);
      expect(tokenizer.decode(t.ids)).toBe(t.text);
    }
    for (const input of golden.inputs) expect(tokenizer.encode(input.text)).toEqual(input.input_ids);
  });

  for (const input of golden.inputs) {
    it(`log-probs of "${input.name}" (${input.input_ids.length} tokens) within ${TOL}`, async () => {
      const { m, weights } = await model;
      const lm = new LlamaCpu(m.config, weights, { capacity: 400 });
      const t0 = performance.now();
      const logits = lm.forward(input.input_ids, { logits: 'all', chunkSize: 128 });
      const ms = performance.now() - t0;
      const V = m.config.vocabSize;
      let maxLp = 0;
      let topMatches = 0;
      input.input_ids.forEach((_, pos) => {
        const lp = logSoftmax(logits, pos * V, V);
        input.top5_ids[pos]!.forEach((id, j) => {
          maxLp = Math.max(maxLp, Math.abs(lp[id]! - input.top5_logprobs[pos]![j]!));
        });
        if (argmax(lp) === input.top5_ids[pos]![0]) topMatches++;
      });
      const last = input.input_ids.length - 1;
      let maxLogit = 0;
      input.final_logits.forEach((g, i) => {
        maxLogit = Math.max(maxLogit, Math.abs(logits[last * V + i]! - g));
      });
      console.log(
        `${dir} ${input.name}: ${input.input_ids.length} tokens in ${ms.toFixed(0)} ms; max |Δ log-prob| (top-5, all positions) = ${maxLp.toExponential(2)}, max |Δ final logit| = ${maxLogit.toExponential(2)}, argmax agrees at ${topMatches}/${input.input_ids.length}`,
      );
      expect(maxLp).toBeLessThanOrEqual(TOL);
      expect(maxLogit).toBeLessThanOrEqual(TOL);
      expect(topMatches).toBe(input.input_ids.length);

      // Greedy continuation, decoding token by token from the KV cache the prompt filled.
      const cont = input.greedy_continuation_32 ?? input.greedy_continuation_8;
      if (cont) {
        const t1 = performance.now();
        const ids: number[] = [];
        let next = argmax(logits, last * V, V);
        while (ids.length < cont.ids.length) {
          ids.push(next);
          if (ids.length < cont.ids.length) next = argmax(lm.forward([next]));
        }
        console.log(`${dir} ${input.name}: greedy ${ids.length} tokens in ${(performance.now() - t1).toFixed(0)} ms: ${JSON.stringify(m.tokenizer.decode(ids))}`);
        expect(ids).toEqual(cont.ids);
        expect(m.tokenizer.decode(ids, { skipSpecialTokens: true })).toBe(cont.text); // golden decoded with skip_special_tokens
      }
    });
  }
});
