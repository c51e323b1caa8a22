/**
 * Choosing the next token from logits: greedy, temperature, top-k, top-p, with a seeded PRNG so
 * that the same seed gives the same tokens on every platform.
 * The PRNG is `Rng` (src/util/rng.ts).
 */
import { HipAttnError } from '../errors.js';
import { argmax } from './cpu-ops.js';
import { Rng } from '../util/rng.js';

export { Rng };

export interface SamplingOptions {
  /** 0 (or less) = greedy. Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens; 0 or undefined = all. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p; 1 or undefined = all. */
  topP?: number;
  /** PRNG seed; default 0 (sampling is always deterministic for a given seed). */
  seed?: number;
}

/** Validates sampling options; INVALID_OPTION naming the field. */
export function checkSamplingOptions(o: SamplingOptions): void {
  if (o.temperature !== undefined && !(Number.isFinite(o.temperature) && o.temperature >= 0)) throw new HipAttnError('INVALID_OPTION', `temperature must be a finite number ≥ 0, got ${o.temperature}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) throw new HipAttnError('INVALID_OPTION', `topK must be an integer ≥ 0, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new HipAttnError('INVALID_OPTION', `topP must be in (0, 1], got ${o.topP}`);
  if (o.seed !== undefined && !Number.isSafeInteger(o.seed)) throw new HipAttnError('INVALID_OPTION', `seed must be an integer, got ${o.seed}`);
}

/** Orders token ids by logit, highest first (lower id first on ties). */
function byLogitDesc(logits: Float32Array, ids: number[]): number[] {
  return ids.sort((a, b) => logits[b]! - logits[a]! || a - b);
}

/** The k ids with the largest logits, highest first (a bounded selection, not a full sort). */
export function topKIds(logits: Float32Array, k: number): number[] {
  const n = logits.length;
  if (k >= n || k > 256) return byLogitDesc(logits, Array.from({ length: n }, (_, i) => i)).slice(0, k);
  // Keep a sorted list of the best k seen so far; most logits are rejected by one comparison.
  const best: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = logits[i]!;
    if (best.length === k) {
      const worst = best[k - 1]!;
      if (v <= logits[worst]!) continue;
      best.pop();
    }
    let lo = 0;
    let hi = best.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (logits[best[mid]!]! >= v) lo = mid + 1;
      else hi = mid;
    }
    best.splice(lo, 0, i);
  }
  return best;
}

export class Sampler {
  private readonly rng: Rng;
  readonly options: Readonly<SamplingOptions>;

  constructor(options: SamplingOptions = {}) {
    checkSamplingOptions(options);
    this.options = { ...options };
    this.rng = new Rng(options.seed ?? 0);
  }

  /** True when this sampler always takes the argmax. */
  get greedy(): boolean {
    return (this.options.temperature ?? 1) <= 0 || this.options.topK === 1;
  }

  /** Picks the next token id from a row of logits. */
  sample(logits: Float32Array): number {
    if (this.greedy) return argmax(logits);
    const temperature = this.options.temperature ?? 1;
    const topK = this.options.topK ?? 0;
    const topP = this.options.topP ?? 1;
    let ids: number[];
    if (topK > 0) ids = topKIds(logits, topK);
    else if (topP < 1) ids = byLogitDesc(logits, Array.from({ length: logits.length }, (_, i) => i));
    else ids = Array.from({ length: logits.length }, (_, i) => i); // id order; no sort needed
    // Softmax of logits / temperature over the candidates (float64).
    let max = -Infinity;
    for (const id of ids) max = Math.max(max, logits[id]!);
    const probs = new Float64Array(ids.length);
    let sum = 0;
    for (let i = 0; i < ids.length; i++) {
      const p = Math.exp((logits[ids[i]!]! - max) / temperature);
      probs[i] = p;
      sum += p;
    }
    let count = ids.length;
    if (topP < 1) {
      // Candidates are sorted by probability: keep the shortest prefix reaching topP.
      let cum = 0;
      for (let i = 0; i < ids.length; i++) {
        cum += probs[i]! / sum;
        if (cum >= topP) {
          count = i + 1;
          break;
        }
      }
      sum = 0;
      for (let i = 0; i < count; i++) sum += probs[i]!;
    }
    const u = this.rng.nextFloat() * sum;
    let acc = 0;
    for (let i = 0; i < count; i++) {
      acc += probs[i]!;
      if (u < acc) return ids[i]!;
    }
    // Rounding: fall back to the last candidate with non-zero probability.
    for (let i = count - 1; i >= 0; i--) if (probs[i]! > 0) return ids[i]!;
    return ids[0]!;
  }
}
