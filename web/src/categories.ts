/**
 * What the visualiser colours: every key of a query, for the method shown, falls in one
 * category. Shared by the worker (which classifies) and the page (which draws).
 */
import { KeyKind } from '../../src/attention/keys.js';

export type Method = 'dense' | 'hip' | 'streaming';
export const METHODS: readonly Method[] = ['dense', 'hip', 'streaming'];
export const METHOD_LABEL: Record<Method, string> = { dense: 'Dense', hip: 'HiP', streaming: 'StreamingLLM' };

/** Key categories (values of the classification arrays). */
export const Cat = {
  /** After the query (causal: never read). */
  Future: 0,
  NotRead: 1,
  Sink: 2,
  Window: 3,
  /** Read by the method and one of the exact top-k blocks. */
  Both: 4,
  /** Selected by HiP's tree search but not in the exact top-k. */
  HipOnly: 5,
  /** In the exact top-k but not read by the method (a miss). */
  ExactOnly: 6,
  /** Dense: read, not in the exact top-k. */
  Read: 7,
} as const;
export type Cat = (typeof Cat)[keyof typeof Cat];

export const CAT_COLOR: Record<Cat, string> = {
  [Cat.Future]: '#ffffff',
  [Cat.NotRead]: '#e4e6eb',
  [Cat.Sink]: '#7b4fc9',
  [Cat.Window]: '#4f8fd6',
  [Cat.Both]: '#2e9e4f',
  [Cat.HipOnly]: '#f0a320',
  [Cat.ExactOnly]: '#d63b3b',
  [Cat.Read]: '#a9cbe9',
};

/** Legend entries shown for a method (label per category). */
export function legend(method: Method): [Cat, string][] {
  if (method === 'dense') return [[Cat.Both, 'read · in exact top-k'], [Cat.Read, 'read (dense reads every key)']];
  if (method === 'streaming') {
    return [
      [Cat.Sink, 'sink'],
      [Cat.Window, 'window'],
      [Cat.Both, 'read · in exact top-k'],
      [Cat.ExactOnly, 'exact top-k, not read'],
      [Cat.NotRead, 'not read'],
    ];
  }
  return [
    [Cat.Sink, 'sink'],
    [Cat.Window, 'window'],
    [Cat.Both, 'HiP-selected ∩ exact top-k'],
    [Cat.HipOnly, 'HiP only'],
    [Cat.ExactOnly, 'exact top-k only (missed)'],
    [Cat.NotRead, 'not read'],
  ];
}

/**
 * Classifies keys 0 … p of one query for `method` into `out` (keys after p: Future), from the
 * KeyKind arrays (0 = not read) of HiP, the exact top-k mask and StreamingLLM.
 */
export function classify(method: Method, p: number, hip: Uint8Array, exact: Uint8Array, streaming: Uint8Array, out: Uint8Array, offset = 0): void {
  for (let t = 0; t <= p; t++) {
    const ek = exact[t]!;
    let c: Cat;
    if (method === 'dense') {
      c = ek === KeyKind.Selected ? Cat.Both : Cat.Read;
    } else if (method === 'hip') {
      const hk = hip[t]!;
      if (hk === KeyKind.Sink) c = Cat.Sink;
      else if (hk === KeyKind.Window) c = Cat.Window;
      else if (hk === KeyKind.Selected) c = ek === KeyKind.Selected ? Cat.Both : Cat.HipOnly;
      else c = ek === KeyKind.Selected ? Cat.ExactOnly : Cat.NotRead;
    } else {
      const sk = streaming[t]!;
      if (sk === KeyKind.Sink) c = Cat.Sink;
      else if (sk !== 0) c = ek === KeyKind.Selected ? Cat.Both : Cat.Window;
      else c = ek === KeyKind.Selected ? Cat.ExactOnly : Cat.NotRead;
    }
    out[offset + t] = c;
  }
}
