/**
 * Tokenization in a worker thread (runtime/tokenize-worker.ts), from the built package (dist/:
 * the worker script only exists compiled): the same ids as on the main thread for text and chat,
 * for a tokenizer.json model and a GGUF SentencePiece model, while the event loop keeps running.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seededRng } from './helpers.js';

const root = join(import.meta.dirname, '..');
type Loaded = { encode(p: unknown): number[]; encodeAsync(p: unknown, offThreadChars?: number): Promise<number[]>; dispose(): Promise<void> };
const { loadModel } = (await import(join(root, 'dist', 'src', 'index.js'))) as { loadModel: (src: string, o: object) => Promise<Loaded> };

const WORDS = ['Once', 'upon', 'a', 'time', 'the', 'pass', 'key', 'is', '31415.', 'Lily', 'éclair', '日本語', '\n', '\n\n', '  ', 'naïve', '🙂', 'x'];

function randomText(rng: { int(n: number): number }, chars: number): string {
  let s = '';
  while (s.length < chars) s += WORDS[rng.int(WORDS.length)]! + (rng.int(4) === 0 ? '' : ' ');
  return s;
}

describe.each([
  ['hip-testbed-mini (tokenizer.json)', join(root, 'models', 'hip-testbed-mini')],
  ['stories260K (GGUF SentencePiece)', join(root, 'models', 'stories260K', 'stories260K.gguf')],
])('tokenize worker: %s', (_name, path) => {
  let model: Loaded;
  beforeAll(async () => {
    model = await loadModel(path, { device: 'cpu', attention: 'dense' });
  });
  afterAll(() => model?.dispose());

  it('encodeAsync (worker) gives the ids of encode (main thread) for text and chat', async () => {
    const rng = seededRng(`tokenize worker ${path}`);
    for (let i = 0; i < 6; i++) {
      const text = randomText(rng, 200 + rng.int(3000));
      // offThreadChars 1: every prompt goes to the worker.
      expect(await model.encodeAsync(text, 1)).toEqual(model.encode(text));
      const messages = [
        { role: 'system', content: randomText(rng, 50) },
        { role: 'user', content: text },
      ];
      expect(await model.encodeAsync({ messages }, 1)).toEqual(model.encode({ messages }));
    }
    const ids = [1, 2, 3];
    expect(await model.encodeAsync({ ids }, 1)).toEqual(ids);
  });

  it('the event loop runs while a long prompt is tokenized in the worker', async () => {
    const rng = seededRng(`tokenize worker loop ${path}`);
    const text = randomText(rng, 400_000);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      const ids = await model.encodeAsync(text);
      expect(ids.length).toBeGreaterThan(10_000);
      // On the main thread (encode) no timer could fire until it returned.
      expect(ticks).toBeGreaterThan(2);
    } finally {
      clearInterval(timer);
    }
    expect(await model.encodeAsync(text)).toEqual(model.encode(text));
  });
});
