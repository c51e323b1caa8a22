/**
 * Metric code of the long-context evaluation, free of any model: negative log-likelihood of
 * logits, perplexity windows, answer checks and accuracy aggregation. Small and pure, so it is
 * tested on hand-computed cases.
 */
import { HipAttnError } from '../errors.js';

/**
 * Negative log-likelihood (natural log) of `target` under one row of logits:
 * logsumexp(logits) − logits[target], computed in float64 with the max subtracted.
 */
export function tokenNll(logits: ArrayLike<number>, target: number, offset = 0, vocab = logits.length - offset): number {
  if (!Number.isInteger(target) || target < 0 || target >= vocab) {
    throw new HipAttnError('INVALID_OPTION', `target token ${target} is outside the vocabulary [0, ${vocab})`);
  }
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) {
    const x = logits[offset + i]!;
    if (x > max) max = x;
  }
  if (!Number.isFinite(max)) throw new HipAttnError('NON_FINITE', `logits are not finite (max ${max})`);
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[offset + i]! - max);
  return Math.log(sum) + max - logits[offset + target]!;
}

/**
 * Sum of the NLL of `targets[i]` under row i of `logits` ([rows, vocab], row-major), for
 * i < targets.length.
 */
export function sumNll(logits: ArrayLike<number>, vocab: number, targets: ArrayLike<number>): number {
  if (logits.length < targets.length * vocab) {
    throw new HipAttnError('SHAPE_MISMATCH', `${targets.length} targets need ${targets.length * vocab} logits, got ${logits.length}`);
  }
  let s = 0;
  for (let i = 0; i < targets.length; i++) s += tokenNll(logits, targets[i]!, i * vocab, vocab);
  return s;
}

/** Running mean NLL over tokens; ppl = exp(mean NLL). */
export class NllAccumulator {
  sum = 0;
  tokens = 0;
  add(nllSum: number, tokens: number): void {
    this.sum += nllSum;
    this.tokens += tokens;
  }
  get nll(): number {
    return this.tokens > 0 ? this.sum / this.tokens : NaN;
  }
  get ppl(): number {
    return Math.exp(this.nll);
  }
}

/** A perplexity window: `tokens` of the file starting at `start`, scored after BOS. */
export interface Window {
  start: number;
  length: number;
}

/**
 * Non-overlapping windows of `context` tokens from the start of a token stream of `total`
 * tokens (a trailing partial window is dropped), at most `maxWindows` of them. Each window is
 * fed as BOS + its tokens and every token of it is scored (the model card's convention).
 */
export function perplexityWindows(total: number, context: number, maxWindows = Infinity): Window[] {
  if (!Number.isSafeInteger(context) || context < 1) throw new HipAttnError('INVALID_OPTION', `context must be a positive integer, got ${context}`);
  if (!(maxWindows >= 0)) throw new HipAttnError('INVALID_OPTION', `maxWindows must be ≥ 0, got ${maxWindows}`);
  const n = Math.min(Math.floor(total / context), maxWindows);
  return Array.from({ length: n }, (_, i) => ({ start: i * context, length: context }));
}

/** The first run of digits in `text` (e.g. " 68413. The pass" → "68413"), or null. */
export function firstNumber(text: string): string | null {
  const m = /\d+/.exec(text);
  return m ? m[0] : null;
}

/** Passkey check: the first number of the generated text equals the passkey. */
export function passkeyCorrect(generated: string, passkey: string): boolean {
  return firstNumber(generated) === passkey;
}

/** Substring check (needle-in-a-haystack, key–value): case-insensitive, whitespace collapsed. */
export function substringCorrect(generated: string, answer: string): boolean {
  const norm = (s: string) => s.toLowerCase().replace(/\s+/g, ' ').trim();
  const a = norm(answer);
  return a.length > 0 && norm(generated).includes(a);
}

/** One row of a retrieval evaluation (passkey, kv, niah): the JSON shape documented in the README. */
export interface RetrievalRow {
  length: number;
  depth: number;
  attention: string;
  trials: number;
  correct: number;
  /** correct / trials, in [0, 1]. */
  accuracy: number;
}

/** One row of a perplexity evaluation: the JSON shape documented in the README. */
export interface PerplexityRow {
  file: string;
  context: number;
  attention: string;
  /** Tokens scored. */
  tokens: number;
  /** Mean NLL per token (natural log). */
  nll: number;
  ppl: number;
}

/** A retrieval row from trial outcomes. */
export function retrievalRow(length: number, depth: number, attention: string, outcomes: readonly boolean[]): RetrievalRow {
  const correct = outcomes.filter(Boolean).length;
  return { length, depth, attention, trials: outcomes.length, correct, accuracy: outcomes.length > 0 ? correct / outcomes.length : NaN };
}

/** Mean accuracy of each method over its rows, weighted by trials (Σ correct / Σ trials). */
export function accuracyByMethod(rows: readonly RetrievalRow[]): Map<string, { trials: number; correct: number; accuracy: number }> {
  const m = new Map<string, { trials: number; correct: number; accuracy: number }>();
  for (const r of rows) {
    const e = m.get(r.attention) ?? { trials: 0, correct: 0, accuracy: NaN };
    e.trials += r.trials;
    e.correct += r.correct;
    e.accuracy = e.trials > 0 ? e.correct / e.trials : NaN;
    m.set(r.attention, e);
  }
  return m;
}

/**
 * Where a needle goes in a filler of `fillerLength` units at `depth` ∈ [0, 1]: before unit
 * round(depth · fillerLength) (0 = right at the start, 1 = right before the question).
 */
export function insertionIndex(fillerLength: number, depth: number): number {
  if (!(depth >= 0 && depth <= 1)) throw new HipAttnError('INVALID_OPTION', `depth must be in [0, 1], got ${depth}`);
  return Math.round(depth * fillerLength);
}
