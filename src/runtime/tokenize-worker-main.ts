/**
 * Worker thread of tokenize-worker.ts: builds the tokenizer from the recipe it was started with
 * and answers `{ id, text, options }` with `{ id, ids }` (a transferred Uint32Array) or
 * `{ id, error: { code, message } }`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { HipAttnError } from '../errors.js';
import { buildTokenizer } from '../model/tokenizer-recipe.js';
import type { EncodeOptions, TokenizerRecipe } from '../model/tokenizer.js';

const tokenizer = buildTokenizer((workerData as { recipe: TokenizerRecipe }).recipe);
parentPort!.on('message', (m: { id: number; text: string; options?: EncodeOptions }) => {
  try {
    const ids = Uint32Array.from(tokenizer.encode(m.text, m.options));
    parentPort!.postMessage({ id: m.id, ids }, [ids.buffer]);
  } catch (e) {
    const code = e instanceof HipAttnError ? e.code : 'TOKENIZER';
    parentPort!.postMessage({ id: m.id, error: { code, message: e instanceof Error ? e.message : String(e) } });
  }
});
