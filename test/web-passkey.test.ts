/**
 * The app's passkey helpers (web/src/passkey.ts) on hip-testbed-mini's tokenizer: the planted
 * key is found in a prompt, and the tokens marked as the needle are those a prefix-decoding
 * reference (test/needle-reference.ts) finds; prompts without a well-formed needle give null.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { passkeyNeedle } from '../src/eval/prompts.js';
import type { OpenedModel } from '../src/model/load.js';
import { openModelPath } from '../src/model/node-load.js';
import { StreamDecoder } from '../src/model/tokenizer.js';
import { findPasskey, needleTokens } from '../web/src/passkey.js';
import { seededRng } from './helpers.js';
import { referenceNeedleTokens } from './needle-reference.js';

let opened: OpenedModel;
beforeAll(async () => {
  opened = await openModelPath('models/hip-testbed-mini');
});
afterAll(() => opened?.store.close());

const FILLER = 'No one who had ever seen Catherine Morland in her infancy would have supposed her born to be an heroine. Her situation in life was against her. ';

/** Token texts as the visualiser's worker makes them (special tokens by name). */
function tokenTexts(ids: number[]): { texts: string[]; special: boolean[] } {
  const t = opened.tokenizer;
  const dec = new StreamDecoder(t, [], { skipSpecialTokens: false });
  return { texts: ids.map((id) => (t.isSpecial(id) ? (t.idToToken(id) ?? '') : dec.push(id))), special: ids.map((id) => t.isSpecial(id)) };
}

describe('web app passkey helpers', () => {
  it('finds the planted key and its tokens at the positions the reference gives', () => {
    const rng = seededRng('web passkey');
    for (let trial = 0; trial < 5; trial++) {
      const key = String(10000 + rng.int(90000));
      const before = FILLER.repeat(1 + rng.int(4));
      const text = `${before}${passkeyNeedle(key)} ${FILLER.repeat(1 + rng.int(3))}\nWhat is the pass key? The pass key is`;
      const found = findPasskey(text);
      expect(found?.key).toBe(key);
      for (const [s, e] of found!.spans) expect(text.slice(s, e)).toBe(key);
      expect(found!.spans[0]![0]).toBe(before.length + 'The pass key is '.length);
      const ids = opened.tokenizer.encode(text);
      const { texts, special } = tokenTexts(ids);
      const marked = needleTokens(texts, special);
      expect(marked?.key).toBe(key);
      const want = referenceNeedleTokens(opened.tokenizer, ids, key);
      expect(want.length).toBeGreaterThanOrEqual(2);
      expect(marked!.tokens).toEqual(want);
    }
  });

  it('gives null without a well-formed needle', () => {
    expect(findPasskey(FILLER)).toBeNull();
    expect(findPasskey('The pass key is 12345. Remember it. 54321 is the pass key.')).toBeNull();
    expect(findPasskey('The pass key is . Remember it.  is the pass key.')).toBeNull();
    const ids = opened.tokenizer.encode(FILLER);
    const { texts, special } = tokenTexts(ids);
    expect(needleTokens(texts, special)).toBeNull();
  });
});
