/**
 * A reference for the app's needle marking (web/src/passkey.ts), computed another way: each
 * token's character span comes from decoding growing prefixes of the ids (not from the
 * per-token texts the app joins), and the key is located with plain indexOf.
 */
import type { TextTokenizer } from '../src/model/tokenizer.js';

/** Indices of the tokens of `ids` whose decoded characters overlap the key in `The pass key is KEY. Remember it. KEY is the pass key.` */
export function referenceNeedleTokens(tokenizer: TextTokenizer, ids: readonly number[], key: string): number[] {
  const decode = (n: number) => tokenizer.decode(ids.slice(0, n), { skipSpecialTokens: true });
  const full = decode(ids.length);
  const sentence = `The pass key is ${key}. Remember it. ${key} is the pass key.`;
  const at = full.indexOf(sentence);
  if (at < 0) throw new Error(`the needle for ${key} is not in the decoded prompt`);
  const first = at + 'The pass key is '.length;
  const second = at + sentence.indexOf(`${key} is the pass key`);
  const keys: [number, number][] = [[first, first + key.length], [second, second + key.length]];
  const out: number[] = [];
  let start = 0;
  for (let i = 0; i < ids.length; i++) {
    const end = decode(i + 1).length;
    if (end > start && keys.some(([s, e]) => start < e && s < end)) out.push(i);
    start = end;
  }
  return out;
}
