/**
 * The per-query view of the recall diagnostics (queryCoverage, used by the browser app's
 * visualiser) agrees with the layer averages (layerRecall) and with the mask inspection API.
 */
import { describe, expect, it } from 'vitest';
import { KeyKind } from '../attention/keys.js';
import { hipAttendedKeys } from '../attention/mask.js';
import { resolveHipOptions, resolveStreamingOptions } from '../attention/options.js';
import { localityProblem } from '../attention/synthetic.js';
import { Rng } from '../util/rng.js';
import { layerMasks, layerRecall, queryCoverage } from './recall.js';

describe('queryCoverage', () => {
  const hip = resolveHipOptions({ topK: 16, blockSizeQ: 16, blockSizeK: 2, sinkTokens: 4, slidingWindow: 32 });
  const streaming = resolveStreamingOptions({ sinkTokens: 4, slidingWindow: 48 });
  const T = 200;
  const input = localityProblem(new Rng(7), { length: T, heads: 4, kvHeads: 2, headDim: 16 });
  const masks = layerMasks(input, hip);

  it('marks exactly the keys hipAttendedKeys lists, by kind, and sums their dense mass', () => {
    for (const [h, i] of [[0, T - 1], [3, 120], [1, 40], [2, 3]] as const) {
      const c = queryCoverage(input, masks, hip, streaming, h, i);
      const want = hipAttendedKeys(masks.hip, 0, h, i);
      const got = { sink: [] as number[], selected: [] as number[], window: [] as number[] };
      c.hipKinds.forEach((k, t) => k === KeyKind.Sink ? got.sink.push(t) : k === KeyKind.Selected ? got.selected.push(t) : k === KeyKind.Window ? got.window.push(t) : undefined);
      expect(got).toEqual({ sink: want.sink, selected: want.selected, window: want.window });
      expect(c.keysHip).toBe(want.sink.length + want.selected.length + want.window.length);
      let mass = 0;
      c.hipKinds.forEach((k, t) => (mass += k ? c.probs[t]! : 0));
      expect(c.massHip).toBeCloseTo(mass, 12);
      expect(c.probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
      // StreamingLLM: sink + window of its own options.
      const sllm = Array.from({ length: i + 1 }, (_, t) => t < streaming.sinkTokens || t > i - streaming.slidingWindow).filter(Boolean).length;
      expect(c.keysStreaming).toBe(sllm);
      expect(c.recall).toBeGreaterThanOrEqual(0);
      expect(c.recall).toBeLessThanOrEqual(1);
    }
  });

  it("agrees with layerRecall's last-query figures", () => {
    const rows = layerRecall(input, hip, streaming, undefined, masks);
    for (const r of rows) {
      const c = queryCoverage(input, masks, hip, streaming, r.head, T - 1);
      expect(c.massHip).toBeCloseTo(r.lastMassHip, 12);
      expect(c.massExact).toBeCloseTo(r.lastMassTopK, 12);
      expect(c.massStreaming).toBeCloseTo(r.lastMassStreaming, 12);
      expect(c.candidateBlocks).toBeGreaterThan(c.blocksPerQuery);
      expect(c.hipBlocks.length).toBe(c.blocksPerQuery);
    }
    // Precomputed masks give the same rows as estimating them again.
    expect(layerRecall(input, hip, streaming)).toEqual(rows);
  });

  it('refuses a head or query outside the input', () => {
    expect(() => queryCoverage(input, masks, hip, streaming, 4, 0)).toThrow(/head 4/);
    expect(() => queryCoverage(input, masks, hip, streaming, 0, T)).toThrow(/query 200/);
  });
});
