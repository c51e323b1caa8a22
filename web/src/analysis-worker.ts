/**
 * The visualiser's worker: runs the prompt through the model on the CPU (float32, the reference
 * forward pass) with a hook on every layer (src/eval/recall.ts runWithLayerHook), keeps each
 * layer's real queries and keys, and answers the page's questions about them — HiP's mask, the
 * exact top-k mask, per-layer/head recall and attention-mass coverage (src/eval/recall.ts), and
 * per-query key categories. A worker, so that the page stays responsive while it computes.
 */
import { hipKeys, KeyKind, streamingKeys } from '../../src/attention/keys.js';
import { maskSlot } from '../../src/attention/mask.js';
import type { HipOptions, StreamingOptions } from '../../src/attention/options.js';
import type { AttentionInput } from '../../src/attention/shape.js';
import { type LayerMasks, layerMasks, layerRecall, queryCoverage, type RecallRow, runWithLayerHook } from '../../src/eval/recall.js';
import { blobSource, mapDirectory } from '../../src/model/byte-source.js';
import { type OpenedModel, openGgufFile, openHfModel } from '../../src/model/load.js';
import { StreamDecoder } from '../../src/model/tokenizer.js';
import { Cat, classify, type Method } from './categories.js';
import type { AnalysisSummary, MatrixAnswer, ModelFiles, QueryAnswer, WorkerRequest, WorkerResponse } from './protocol.js';

interface WorkerScope {
  postMessage(message: WorkerResponse, transfer?: Transferable[]): void;
  onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null;
}
const scope = self as unknown as WorkerScope;

let opened: OpenedModel | null = null;
interface Capture {
  ids: number[];
  inputs: AttentionInput<Float32Array>[];
}
let capture: Capture | null = null;
let analysis: { hip: HipOptions; streaming: StreamingOptions; masks: LayerMasks[] } | null = null;

function post(m: WorkerResponse, transfer: Transferable[] = []): void {
  scope.postMessage(m, transfer);
}

async function open(id: number, model: ModelFiles): Promise<void> {
  if (opened) await opened.store.close();
  opened = null;
  capture = null;
  analysis = null;
  opened = model.kind === 'gguf' ? await openGgufFile(blobSource(model.name, model.file)) : await openHfModel(mapDirectory(model.name, model.files));
  const c = opened.config;
  post({ id, type: 'opened', name: model.name, config: { layers: c.numLayers, heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, vocab: c.vocabSize, hidden: c.hiddenSize } });
}

function tokenTexts(m: OpenedModel, ids: number[]): string[] {
  const dec = new StreamDecoder(m.tokenizer, [], { skipSpecialTokens: false });
  return ids.map((t) => (m.tokenizer.isSpecial(t) ? (m.tokenizer.idToToken(t) ?? `<${t}>`) : dec.push(t)));
}

async function analyse(id: number, text: string, hip: HipOptions, streaming: StreamingOptions, maxTokens: number): Promise<void> {
  if (!opened) throw new Error('no model is open');
  const m = opened;
  let ids = m.tokenizer.encode(text);
  const truncated = ids.length > maxTokens;
  if (truncated) ids = ids.slice(0, maxTokens);
  if (ids.length < 2) throw new Error('the prompt needs at least 2 tokens');
  const progress = (fraction: number, label: string) => post({ id, type: 'progress', fraction, label });
  const t0 = performance.now();
  // The same prompt again (only the options changed): keep the captured q/k.
  if (!capture || capture.ids.length !== ids.length || capture.ids.some((x, i) => x !== ids[i])) {
    capture = null;
    const inputs: AttentionInput<Float32Array>[] = [];
    await runWithLayerHook(m, ids, (layer, input) => (inputs[layer] = input), {
      onProgress: (f, label) => progress(f * 0.6, `CPU forward pass, ${label}`),
    });
    capture = { ids, inputs };
  }
  const captureMs = performance.now() - t0;
  const t1 = performance.now();
  const rows: RecallRow[] = [];
  const masks: LayerMasks[] = [];
  const L = capture.inputs.length;
  for (let l = 0; l < L; l++) {
    progress(0.6 + (0.4 * l) / L, `masks and recall, layer ${l + 1}/${L}`);
    await new Promise((r) => setTimeout(r, 0)); // let the progress message out
    const input = capture.inputs[l]!;
    masks[l] = layerMasks(input, hip);
    const runtime = l < hip.denseLayers ? 'dense' : 'hip';
    for (const r of layerRecall(input, hip, streaming, undefined, masks[l])) rows.push({ layer: l, runtime, ...r });
  }
  analysis = { hip, streaming, masks };
  const c = m.config;
  const summary: AnalysisSummary = {
    tokens: tokenTexts(m, ids),
    special: ids.map((t) => m.tokenizer.isSpecial(t)),
    ids,
    layers: c.numLayers,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    hip,
    streaming,
    rows,
    captureMs,
    masksMs: performance.now() - t1,
    truncated,
  };
  post({ id, type: 'analysed', summary });
}

function need(): { cap: Capture; an: NonNullable<typeof analysis> } {
  if (!capture || !analysis) throw new Error('analyse a prompt first');
  return { cap: capture, an: analysis };
}

function query(id: number, layer: number, head: number, index: number, method: Method): void {
  const { cap, an } = need();
  const input = cap.inputs[layer];
  if (!input) throw new Error(`no layer ${layer}`);
  const cov = queryCoverage(input, an.masks[layer]!, an.hip, an.streaming, head, index);
  const T = cap.ids.length;
  const p = cov.position;
  const categories = new Uint8Array(T);
  classify(method, p, cov.hipKinds, cov.exactKinds, cov.streamingKinds, categories);
  // Fraction of the exact top-k keys (its selected blocks, clipped to the candidates) each method reads.
  let topK = 0;
  const read = { dense: 0, hip: 0, streaming: 0 };
  for (let t = 0; t <= p; t++) {
    if (cov.exactKinds[t] !== KeyKind.Selected) continue;
    topK++;
    read.dense++;
    if (cov.hipKinds[t] !== 0) read.hip++;
    if (cov.streamingKinds[t] !== 0) read.streaming++;
  }
  const frac = (x: number) => (topK > 0 ? x / topK : 1);
  const answer: QueryAnswer = {
    layer,
    head,
    index,
    position: p,
    queryBlock: cov.queryBlock,
    categories,
    probs: Float32Array.from(cov.probs),
    hipBlocks: cov.hipBlocks,
    exactBlocks: cov.exactBlocks,
    candidateBlocks: cov.candidateBlocks,
    blocksPerQuery: cov.blocksPerQuery,
    recall: cov.recall,
    figures: {
      dense: { keys: p + 1, topKRead: frac(read.dense), mass: 1 },
      hip: { keys: cov.keysHip, topKRead: frac(read.hip), mass: cov.massHip },
      streaming: { keys: cov.keysStreaming, topKRead: frac(read.streaming), mass: cov.massStreaming },
    },
  };
  post({ id, type: 'query', answer }, [answer.categories.buffer, answer.probs.buffer]);
}

/** Draw priority inside a bin of the matrix (rarer, more telling categories first). */
const PRIORITY: Cat[] = [Cat.ExactOnly, Cat.HipOnly, Cat.Both, Cat.Sink, Cat.Window, Cat.Read, Cat.NotRead, Cat.Future];
const RANK = new Uint8Array(8);
PRIORITY.forEach((c, i) => (RANK[c] = i));

function matrix(id: number, layer: number, head: number, method: Method, maxSide: number): void {
  const { cap, an } = need();
  const T = cap.ids.length;
  const mask = an.masks[layer]!;
  const { hip, streaming } = an;
  const side = Math.min(T, maxSide);
  const cells = new Uint8Array(side * side).fill(Cat.Future);
  const keys = new Int32Array(T);
  const kinds = new Uint8Array(T);
  const hk = new Uint8Array(T);
  const ek = new Uint8Array(T);
  const sk = new Uint8Array(T);
  const row = new Uint8Array(T);
  const fill = (arr: Uint8Array, n: number) => {
    for (let j = 0; j < n; j++) arr[keys[j]!] = kinds[j]!;
  };
  for (let i = 0; i < T; i++) {
    const p = i; // a whole prefill: query i sits at key position i
    const qb = Math.floor(i / hip.blockSizeQ);
    hk.fill(0, 0, p + 1);
    ek.fill(0, 0, p + 1);
    sk.fill(0, 0, p + 1);
    if (method === 'hip') fill(hk, hipKeys(p, hip.sinkTokens, hip.slidingWindow, hip.blockSizeK, mask.hip.blockStarts, maskSlot(mask.hip, 0, head, qb), mask.hip.blocksPerQuery, keys, kinds));
    fill(ek, hipKeys(p, hip.sinkTokens, hip.slidingWindow, hip.blockSizeK, mask.exact.blockStarts, maskSlot(mask.exact, 0, head, qb), mask.exact.blocksPerQuery, keys, kinds));
    if (method === 'streaming') {
      const n = streamingKeys(p, streaming.sinkTokens, streaming.slidingWindow, keys);
      for (let j = 0; j < n; j++) sk[keys[j]!] = keys[j]! < streaming.sinkTokens ? KeyKind.Sink : KeyKind.Window;
    }
    classify(method, p, hk, ek, sk, row);
    const r = Math.floor((i * side) / T);
    for (let t = 0; t <= p; t++) {
      const c = Math.floor((t * side) / T);
      const o = r * side + c;
      if (RANK[row[t]!]! < RANK[cells[o]!]!) cells[o] = row[t]!;
    }
  }
  const answer: MatrixAnswer = { layer, head, method, side, tokens: T, cells };
  post({ id, type: 'matrix', answer }, [cells.buffer]);
}

scope.onmessage = (e: MessageEvent<WorkerRequest>) => {
  const r = e.data;
  void (async () => {
    try {
      if (r.type === 'open') await open(r.id, r.model);
      else if (r.type === 'analyse') await analyse(r.id, r.text, r.hip, r.streaming, r.maxTokens);
      else if (r.type === 'query') query(r.id, r.layer, r.head, r.index, r.method);
      else if (r.type === 'matrix') matrix(r.id, r.layer, r.head, r.method, r.maxSide);
    } catch (err) {
      post({ id: r.id, type: 'error', message: err instanceof Error ? err.message : String(err) });
    }
  })();
};
