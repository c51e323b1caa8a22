import { describe, expect, it } from 'vitest';
import {
  accuracyByMethod,
  firstNumber,
  insertionIndex,
  NllAccumulator,
  passkeyCorrect,
  perplexityWindows,
  retrievalRow,
  substringCorrect,
  sumNll,
  tokenNll,
} from './metrics.js';

describe('NLL and perplexity', () => {
  it('tokenNll of uniform logits is log(vocab)', () => {
    expect(tokenNll([0, 0, 0, 0], 2)).toBeCloseTo(Math.log(4), 12);
    expect(tokenNll([5, 5, 5, 5, 5, 5, 5, 5], 7)).toBeCloseTo(Math.log(8), 12);
  });

  it('tokenNll matches a hand computation', () => {
    // logits [ln 1, ln 2, ln 3, ln 4]: p = [0.1, 0.2, 0.3, 0.4]
    const logits = [0, Math.log(2), Math.log(3), Math.log(4)];
    expect(tokenNll(logits, 3)).toBeCloseTo(-Math.log(0.4), 12);
    expect(tokenNll(logits, 0)).toBeCloseTo(-Math.log(0.1), 12);
    // shifting every logit does not matter, large values do not overflow
    expect(tokenNll(logits.map((x) => x + 1000), 1)).toBeCloseTo(-Math.log(0.2), 9);
  });

  it('sumNll reads one row per target from [rows, vocab] logits', () => {
    const vocab = 3;
    const logits = new Float32Array([0, 0, 0, /* row 1 */ 0, Math.log(3), 0]);
    // row 0: p = 1/3 each; row 1: p = [0.2, 0.6, 0.2]
    expect(sumNll(logits, vocab, [1, 1])).toBeCloseTo(Math.log(3) - Math.log(0.6), 6);
    expect(() => sumNll(logits, vocab, [0, 0, 0])).toThrow(/3 targets need 9 logits/);
    expect(() => tokenNll([0, 0], 2)).toThrow(/outside the vocabulary/);
  });

  it('NllAccumulator: mean NLL over all tokens, ppl = exp(mean)', () => {
    const a = new NllAccumulator();
    a.add(2 * Math.log(4), 2); // two tokens at p = 1/4
    a.add(Math.log(2), 2); // two tokens, total NLL ln 2
    expect(a.tokens).toBe(4);
    expect(a.nll).toBeCloseTo((2 * Math.log(4) + Math.log(2)) / 4, 12);
    expect(a.ppl).toBeCloseTo(Math.exp(a.nll), 12);
    // uniform over 4 → ppl 4
    const u = new NllAccumulator();
    u.add(10 * Math.log(4), 10);
    expect(u.ppl).toBeCloseTo(4, 12);
    expect(new NllAccumulator().nll).toBeNaN();
  });

  it('perplexityWindows: non-overlapping from the start, partial window dropped, capped', () => {
    expect(perplexityWindows(10, 4)).toEqual([
      { start: 0, length: 4 },
      { start: 4, length: 4 },
    ]);
    expect(perplexityWindows(12, 4)).toHaveLength(3);
    expect(perplexityWindows(12, 4, 2)).toEqual([
      { start: 0, length: 4 },
      { start: 4, length: 4 },
    ]);
    expect(perplexityWindows(3, 4)).toEqual([]);
    // the model card's counts: grover_cleveland 145,327 tokens at 8192 → 17 windows; 64 at 1024 (capped)
    expect(perplexityWindows(145327, 8192, 64)).toHaveLength(17);
    expect(perplexityWindows(145327, 1024, 64)).toHaveLength(64);
    expect(() => perplexityWindows(10, 0)).toThrow(/context must be a positive integer/);
  });
});

describe('answers', () => {
  it('firstNumber / passkeyCorrect take the first run of digits', () => {
    expect(firstNumber(' 68413. The pass')).toBe('68413');
    expect(firstNumber('no digits')).toBeNull();
    expect(firstNumber(' 6841 3')).toBe('6841');
    expect(passkeyCorrect(' 68413. The pass', '68413')).toBe(true);
    expect(passkeyCorrect(' 684130', '68413')).toBe(false);
    expect(passkeyCorrect(' The pass key is 68413', '68413')).toBe(true);
    expect(passkeyCorrect(' 12345 68413', '68413')).toBe(false);
    expect(passkeyCorrect('', '68413')).toBe(false);
  });

  it('substringCorrect is case-insensitive and collapses whitespace', () => {
    expect(substringCorrect(' The best thing is to eat a  Sandwich in Dolores Park.', 'sandwich in dolores park')).toBe(true);
    expect(substringCorrect('value 3fa9c1d2', '3fa9c1d2')).toBe(true);
    expect(substringCorrect('value 3fa9c1d', '3fa9c1d2')).toBe(false);
    expect(substringCorrect('anything', '   ')).toBe(false);
  });
});

describe('aggregation and depth', () => {
  it('retrievalRow and accuracyByMethod (trial-weighted)', () => {
    const r1 = retrievalRow(4096, 0.5, 'hip', [true, true, false, true]);
    expect(r1).toEqual({ length: 4096, depth: 0.5, attention: 'hip', trials: 4, correct: 3, accuracy: 0.75 });
    const r2 = retrievalRow(8192, 0.5, 'hip', [true, false]);
    const r3 = retrievalRow(8192, 0.5, 'dense', [true, true]);
    const by = accuracyByMethod([r1, r2, r3]);
    expect(by.get('hip')).toEqual({ trials: 6, correct: 4, accuracy: 4 / 6 });
    expect(by.get('dense')!.accuracy).toBe(1);
    expect(retrievalRow(1, 0, 'x', []).accuracy).toBeNaN();
  });

  it('insertionIndex: 0 = first, 1 = after the last filler unit, rounded in between', () => {
    expect(insertionIndex(100, 0)).toBe(0);
    expect(insertionIndex(100, 1)).toBe(100);
    expect(insertionIndex(100, 0.25)).toBe(25);
    expect(insertionIndex(7, 0.5)).toBe(4); // round(3.5)
    expect(() => insertionIndex(10, 1.5)).toThrow(/depth must be in \[0, 1\]/);
    expect(() => insertionIndex(10, Number.NaN)).toThrow(/depth/);
  });
});
