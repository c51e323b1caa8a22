/**
 * The passkey needle in a prompt (the sentence src/eval/prompts.ts plants, `passkeyNeedle`):
 * which key it plants, where the key's characters are, and which prompt tokens hold them.
 * The app finds the needle in the text itself, so that it works for the "Passkey example" and
 * for any prompt that carries the same sentence.
 */
import { passkeyNeedle } from '../../src/eval/prompts.js';

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** The needle's text around the key: before, between the two keys, after. */
const PARTS = passkeyNeedle('\u0000').split('\u0000') as [string, string, string];
const NEEDLE = new RegExp(`${escape(PARTS[0])}(\\d+)${escape(PARTS[1])}\\1${escape(PARTS[2])}`);

export interface Passkey {
  key: string;
  /** Character ranges [start, end) of the key's two occurrences in the text. */
  spans: [number, number][];
}

/** The first passkey needle in `text`, or null. */
export function findPasskey(text: string): Passkey | null {
  const m = NEEDLE.exec(text);
  if (!m) return null;
  const key = m[1]!;
  const first = m.index + PARTS[0].length;
  const second = first + key.length + PARTS[1].length;
  return { key, spans: [[first, first + key.length], [second, second + key.length]] };
}

/**
 * The planted key and the indices of the tokens that hold its characters, from the tokens'
 * texts (special tokens contribute no text); null when the tokens carry no needle.
 */
export function needleTokens(texts: readonly string[], special: readonly boolean[]): { key: string; tokens: number[] } | null {
  const starts: number[] = [];
  let joined = '';
  texts.forEach((t, i) => {
    starts.push(joined.length);
    if (!special[i]) joined += t;
  });
  const found = findPasskey(joined);
  if (!found) return null;
  const tokens: number[] = [];
  for (let i = 0; i < texts.length; i++) {
    const a = starts[i]!;
    const b = special[i] ? a : a + texts[i]!.length;
    if (b > a && found.spans.some(([s, e]) => a < e && s < b)) tokens.push(i);
  }
  return { key: found.key, tokens };
}
