/**
 * Synthetic attention problems with known answers, for the demo, benchmarks and tests.
 *
 * `plantedKeysProblem`: every query block shares a direction, and some query blocks get a few
 * "planted" keys far behind them — outside HiP's sliding window and StreamingLLM's — with much
 * higher scores than everything else. Real attention has locality (neighbouring keys score
 * alike), which HiP's coarse tree levels rely on, so each planted key sits at the peak of a
 * bump as wide as half a coarsest tree node. Bumps never overlap. A method that keeps what
 * matters must find the planted keys; a sliding window cannot.
 *
 * `localityProblem`: keys follow a smooth random walk plus noise (attention scores vary
 * smoothly with position), queries are random: a recall benchmark for top-k search.
 */
import type { Rng } from '../util/rng.js';
import { HIP_DEFAULTS, type HipOptions } from './options.js';
import type { AttentionInput } from './shape.js';

export interface PlantedKey {
  /** Query head and query block the key was planted for. */
  head: number;
  queryBlock: number;
  /** Key position of the bump's peak. */
  position: number;
}

export interface PlantedKeysSpec {
  length: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Planted keys per planted query block. Default 2. */
  perBlock?: number;
  /** Plant in every n-th query block (bumps need room). Default 3. */
  everyNthBlock?: number;
  /** Keys are planted at least this far behind the block's last query. Default 768 (StreamingLLM's default window). */
  minDistance?: number;
  /** Block sizes the problem is laid out for. Default HIP.md's. */
  hip?: Partial<HipOptions>;
}

function unitVector(rng: Rng, d: number): Float32Array {
  const u = rng.normalArray(d);
  let norm = 0;
  for (const x of u) norm += x * x;
  norm = Math.sqrt(norm);
  return u.map((x) => x / norm);
}

export function plantedKeysProblem(rng: Rng, spec: PlantedKeysSpec): { input: AttentionInput<Float32Array>; planted: PlantedKey[] } {
  const { length: T, heads, kvHeads, headDim: d } = spec;
  const o = { ...HIP_DEFAULTS, ...spec.hip };
  const perBlock = spec.perBlock ?? 2;
  const everyNth = spec.everyNthBlock ?? 3;
  const minDistance = spec.minDistance ?? 768;
  const q = new Float32Array(heads * T * d);
  const k = rng.normalArray(kvHeads * T * d);
  const v = rng.normalArray(kvHeads * T * d);
  const numQB = Math.ceil(T / o.blockSizeQ);
  const planted: PlantedKey[] = [];
  const group = heads / kvHeads;
  const occupied = Array.from({ length: kvHeads }, () => new Uint8Array(T));
  for (let h = 0; h < heads; h++) {
    const kvh = Math.floor(h / group);
    for (let qb = 0; qb < numQB; qb++) {
      const u = unitVector(rng, d);
      const qEnd = Math.min((qb + 1) * o.blockSizeQ, T);
      for (let i = qb * o.blockSizeQ; i < qEnd; i++)
        for (let c = 0; c < d; c++) q[(h * T + i) * d + c] = 6 * u[c]! + 0.5 * rng.normal();
      const rEnd = qEnd - Math.max(minDistance, o.slidingWindow);
      if (qb % everyNth !== 0 || rEnd - o.sinkTokens <= 2 * o.topK) continue; // short ranges need no pruning
      const width = Math.max(2, (rEnd - o.sinkTokens) / (o.topK / o.blockSizeK) / 2);
      const reach = Math.ceil(3 * width);
      for (let j = 0; j < perBlock; j++) {
        for (let attempt = 0; attempt < 200; attempt++) {
          const pos = o.sinkTokens + reach + rng.int(rEnd - o.sinkTokens - 2 * reach);
          if (occupied[kvh]!.subarray(pos - reach, pos + reach + 1).some((x) => x)) continue;
          occupied[kvh]!.fill(1, pos - reach, pos + reach + 1);
          planted.push({ head: h, queryBlock: qb, position: pos });
          for (let t = pos - reach; t <= pos + reach; t++) {
            const g = 40 * Math.exp(-(((t - pos) / width) ** 2));
            for (let c = 0; c < d; c++) k[(kvh * T + t) * d + c] = g * u[c]! + rng.normal();
          }
          break;
        }
      }
    }
  }
  return { input: { q, k, v, shape: { batch: 1, heads, kvHeads, queryLength: T, keyLength: T, headDim: d } }, planted };
}

export interface LocalitySpec {
  length: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Per-step correlation of the key random walk. Default 0.98. */
  smoothness?: number;
  /** Independent noise added to every key. Default 0.3. */
  noise?: number;
}

export function localityProblem(rng: Rng, spec: LocalitySpec): AttentionInput<Float32Array> {
  const { length: T, heads, kvHeads, headDim: d } = spec;
  const rho = spec.smoothness ?? 0.98;
  const noise = spec.noise ?? 0.3;
  const k = new Float32Array(kvHeads * T * d);
  for (let kvh = 0; kvh < kvHeads; kvh++) {
    const walk = rng.normalArray(d);
    for (let t = 0; t < T; t++)
      for (let c = 0; c < d; c++) {
        walk[c] = rho * walk[c]! + Math.sqrt(1 - rho * rho) * rng.normal();
        k[(kvh * T + t) * d + c] = 2 * walk[c]! + noise * rng.normal();
      }
  }
  return {
    q: rng.normalArray(heads * T * d),
    k,
    v: rng.normalArray(kvHeads * T * d),
    shape: { batch: 1, heads, kvHeads, queryLength: T, keyLength: T, headDim: d },
  };
}

/** Fraction of planted keys that lie in the key blocks `selected(head, queryBlock)` returns. */
export function plantedRecall(planted: readonly PlantedKey[], contains: (p: PlantedKey) => boolean): number {
  if (planted.length === 0) return 1;
  let found = 0;
  for (const p of planted) if (contains(p)) found++;
  return found / planted.length;
}
