/**
 * The hipattn browser app: load a model (local files, drag and drop, or a URL), generate on
 * WebGPU with dense / HiP / StreamingLLM attention, and look at what HiP reads — per layer,
 * head and query — against the exact top-k and StreamingLLM, on the model's real q/k.
 *
 * Everything model-related comes from the library (../../src): loadModel / HipModel for
 * generation, src/eval/recall.ts (in analysis-worker.ts) for the masks and their recall.
 */
import { HIP_DEFAULTS, type HipOptions, resolveHipOptions, resolveStreamingOptions, STREAMING_DEFAULTS, type StreamingOptions } from '../../src/attention/options.js';
import { resolveAttentionConfig, type AttentionMethod } from '../../src/attention/method.js';
import type { RecallRow } from '../../src/eval/recall.js';
import { firstNumber, passkeyCorrect } from '../../src/eval/metrics.js';
import { PASSKEY_QUESTION, passkeyNeedle } from '../../src/eval/prompts.js';
import { acquireGpu, type GpuContext, isSoftwareAdapter, summaryLine } from '../../src/gpu/device.js';
import { blobSource, mapDirectory } from '../../src/model/byte-source.js';
import { loadModel } from '../../src/runtime/load.js';
import type { GenerationStats, HipModel } from '../../src/runtime/model.js';
import haystack from '../../data/northanger-abbey-ch1-7.txt?raw';
import { Cat, CAT_COLOR, legend, METHOD_LABEL, type Method } from './categories.js';
import type { AnalysisSummary, MatrixAnswer, ModelFiles, QueryAnswer, WorkerRequest, WorkerRequestBody, WorkerResponse } from './protocol.js';
import { findPasskey, needleTokens } from './passkey.js';
import { fetchModel, filesFromDrop, modelBytes, modelFromFiles } from './sources.js';

// ---------------------------------------------------------------------------------------------
// DOM helpers

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
}
function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}
const pct = (x: number, digits = 1) => `${(100 * x).toFixed(digits)} %`;
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(bytes < 2 ** 24 ? 1 : 0)} MB`;
const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

function setState(key: string, value: string): void {
  document.body.dataset[key] = value;
}

function progress(bar: HTMLElement, fraction: number): void {
  bar.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
}

function status(el: HTMLElement, text: string, error = false): void {
  el.textContent = text;
  el.classList.toggle('error', error);
}

// ---------------------------------------------------------------------------------------------
// Attention options

type OptionKey = keyof Omit<HipOptions, 'representative' | 'shiftedBlocks'> | 'streamingSink' | 'streamingWindow';
const OPTION_FIELDS: { key: OptionKey; label: string; title: string; for: AttentionMethod[] }[] = [
  { key: 'topK', label: 'top-k', title: 'keys selected per query block (topK / blockSizeK key blocks)', for: ['hip'] },
  { key: 'blockSizeQ', label: 'block size q', title: 'queries sharing one mask', for: ['hip'] },
  { key: 'blockStrideQ', label: 'block stride q', title: 'every n-th query of a block scores', for: ['hip'] },
  { key: 'blockSizeK', label: 'block size k', title: 'keys per selected block', for: ['hip'] },
  { key: 'blockStrideK', label: 'block stride k', title: 'stride inside a key block when scoring', for: ['hip'] },
  { key: 'sinkTokens', label: 'sink tokens', title: 'first tokens always attended', for: ['hip'] },
  { key: 'slidingWindow', label: 'sliding window', title: 'most recent tokens always attended', for: ['hip'] },
  { key: 'refreshInterval', label: 'refresh interval', title: 'decoding: re-estimate the mask every n tokens', for: ['hip'] },
  { key: 'denseLayers', label: 'dense layers', title: 'first layers kept dense', for: ['hip'] },
  { key: 'headGroupSize', label: 'head group', title: 'consecutive heads sharing one top-k', for: ['hip'] },
  { key: 'representativeBlocks', label: 'representatives', title: 'key blocks that score a half of the tree search (its score is their max; 1 = HIP.md)', for: ['hip'] },
  { key: 'streamingSink', label: 'StreamingLLM sink', title: 'StreamingLLM: first tokens attended', for: ['streaming'] },
  { key: 'streamingWindow', label: 'StreamingLLM window', title: 'StreamingLLM: most recent tokens attended', for: ['streaming'] },
];

type Preset = Record<OptionKey, number>;
const { representative: _r, shiftedBlocks: _s, ...NUMERIC_DEFAULTS } = HIP_DEFAULTS;
const PRESETS: Record<string, Preset> = {
  defaults: { ...NUMERIC_DEFAULTS, streamingSink: STREAMING_DEFAULTS.sinkTokens, streamingWindow: STREAMING_DEFAULTS.slidingWindow },
  // Scaled down so that HiP has to choose in prompts of a few hundred tokens (same key budget for StreamingLLM).
  short: { ...NUMERIC_DEFAULTS, topK: 64, blockSizeQ: 32, sinkTokens: 4, slidingWindow: 64, streamingSink: 4, streamingWindow: 128 },
};

const optionInputs = new Map<OptionKey, HTMLInputElement>();
let representative: HTMLSelectElement;
let shiftedBlocks: HTMLInputElement;

function buildOptions(): void {
  const box = $('hip-options');
  for (const f of OPTION_FIELDS) {
    const input = h('input', { type: 'number', min: '0', step: '1', id: `opt-${f.key}` });
    optionInputs.set(f.key, input);
    box.append(h('label', { title: f.title, 'data-for': f.for.join(' ') }, f.label, input));
  }
  representative = h('select', { id: 'opt-representative' }, h('option', { value: 'center' }, 'centre'), h('option', { value: 'first' }, 'first (v1)'));
  box.append(h('label', { title: 'block that scores a node of the tree search', 'data-for': 'hip' }, 'representative', representative));
  shiftedBlocks = h('input', { type: 'checkbox', id: 'opt-shiftedBlocks' });
  box.append(h('label', { title: 'decoding: between refreshes also read the selected blocks and the sink shifted by the steps since the refresh', 'data-for': 'hip' }, 'shifted blocks', shiftedBlocks));
  applyPreset('defaults');
}

function applyPreset(name: string): void {
  const p = PRESETS[name]!;
  for (const [k, input] of optionInputs) input.value = String(p[k]);
  representative.value = HIP_DEFAULTS.representative;
  shiftedBlocks.checked = HIP_DEFAULTS.shiftedBlocks;
  onOptionsChanged();
}

function currentMethod(): AttentionMethod {
  return (document.querySelector<HTMLInputElement>('input[name="method"]:checked')?.value ?? 'hip') as AttentionMethod;
}

function readOptions(): { hip: HipOptions; streaming: StreamingOptions } {
  const v = (k: OptionKey) => {
    const x = Number(optionInputs.get(k)!.value);
    return Number.isFinite(x) ? x : NaN;
  };
  const hip = resolveHipOptions({
    topK: v('topK'),
    blockSizeQ: v('blockSizeQ'),
    blockStrideQ: v('blockStrideQ'),
    blockSizeK: v('blockSizeK'),
    blockStrideK: v('blockStrideK'),
    sinkTokens: v('sinkTokens'),
    slidingWindow: v('slidingWindow'),
    refreshInterval: v('refreshInterval'),
    denseLayers: v('denseLayers'),
    headGroupSize: v('headGroupSize'),
    representativeBlocks: v('representativeBlocks'),
    representative: representative.value as HipOptions['representative'],
    shiftedBlocks: shiftedBlocks.checked,
  });
  const streaming = resolveStreamingOptions({ sinkTokens: v('streamingSink'), slidingWindow: v('streamingWindow') });
  return { hip, streaming };
}

function onOptionsChanged(): void {
  const method = currentMethod();
  for (const label of $('hip-options').querySelectorAll<HTMLLabelElement>('label')) {
    label.classList.toggle('off', !(label.dataset.for ?? '').split(' ').includes(method));
  }
  updatePromptInfo();
}

// ---------------------------------------------------------------------------------------------
// The model

let gpu: GpuContext | null = null;
let gpuError = '';
let files: ModelFiles | null = null;
let model: HipModel | null = null;
let modelKey = '';
let loading: Promise<void> | null = null;

const worker = new Worker(new URL('./analysis-worker.ts', import.meta.url), { type: 'module' });
let nextRequest = 1;
const pending = new Map<number, { resolve: (r: WorkerResponse) => void; reject: (e: Error) => void; onProgress?: (f: number, label: string) => void }>();
worker.onmessage = (e: MessageEvent<WorkerResponse>) => {
  const r = e.data;
  const p = pending.get(r.id);
  if (!p) return;
  if (r.type === 'progress') {
    p.onProgress?.(r.fraction, r.label);
    return;
  }
  pending.delete(r.id);
  if (r.type === 'error') p.reject(new Error(r.message));
  else p.resolve(r);
};
worker.onerror = (e) => {
  for (const p of pending.values()) p.reject(new Error(`analysis worker failed: ${e.message}`));
  pending.clear();
};

function ask<T extends WorkerResponse['type']>(req: WorkerRequestBody, onProgress?: (f: number, label: string) => void): Promise<Extract<WorkerResponse, { type: T }>> {
  const id = nextRequest++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve: resolve as (r: WorkerResponse) => void, reject, ...(onProgress ? { onProgress } : {}) });
    worker.postMessage({ ...req, id } as WorkerRequest);
  });
}

async function initGpu(): Promise<void> {
  try {
    gpu = await acquireGpu({ backend: 'browser', ifUnavailable: 'null', label: 'hipattn app' });
  } catch (e) {
    gpuError = errorText(e);
  }
  const line = gpu
    ? `WebGPU: ${summaryLine(gpu.adapterInfo)} · shader-f16 ${gpu.features.shaderF16 ? 'yes' : 'no (f32 path)'} · subgroups ${gpu.features.subgroups ? 'yes' : 'no'}`
    : `No WebGPU${gpuError ? ` (${gpuError})` : ' in this browser'}: generation runs on the CPU (slow)`;
  $('device').textContent = line;
  void gpu?.lost.then((info) => {
    if (info.reason !== 'destroyed') $('device').textContent = `WebGPU device lost: ${info.message}`;
  });
}

function attentionKey(): { key: string; config: ReturnType<typeof resolveAttentionConfig>; device: 'cpu' | 'webgpu'; contextLength: number } {
  const { hip, streaming } = readOptions();
  const config = resolveAttentionConfig({ method: currentMethod(), hip, streaming });
  const want = ($('device-select') as HTMLSelectElement).value;
  // 'auto' passes over software adapters (SwiftShader), as loadModel's 'auto' does: the CPU backend is far faster there
  const device = want === 'cpu' || (want === 'auto' && (!gpu || isSoftwareAdapter(gpu.adapterInfo))) ? 'cpu' : 'webgpu';
  if (device === 'webgpu' && !gpu) throw new Error(`WebGPU is not available${gpuError ? `: ${gpuError}` : ''}; choose the CPU device`);
  const contextLength = Number(($('context-length') as HTMLInputElement).value);
  return { key: JSON.stringify([config, device, contextLength]), config, device, contextLength };
}

/** Loads (or reloads, when the attention options, device or context changed) the model from `files`. */
async function ensureModel(announce = true): Promise<HipModel> {
  if (loading) await loading;
  if (!files) throw new Error('load a model first');
  const want = attentionKey();
  if (model && modelKey === want.key) return model;
  const bar = $('load-bar');
  const st = $('load-status');
  const source = files.kind === 'gguf' ? blobSource(files.name, files.file) : mapDirectory(files.name, files.files);
  const run = (async () => {
    if (announce) setState('model', 'loading');
    if (model) {
      const old = model;
      model = null;
      await old.dispose();
    }
    status(st, `Loading ${files!.name} on ${want.device === 'webgpu' ? 'WebGPU' : 'the CPU'} with ${want.config.method} attention…`);
    const t0 = performance.now();
    const m = await loadModel(source, {
      ...(want.device === 'webgpu' ? { gpu: gpu! } : { device: 'cpu' as const }),
      attention: want.config,
      contextLength: Math.min(want.contextLength, 1 << 20),
      onProgress: (e) => {
        if (e.stage === 'weights') {
          progress(bar, 0.5 + (0.5 * e.loaded) / Math.max(1, e.total));
          status(st, `Weights → ${want.device === 'webgpu' ? 'WebGPU' : 'CPU'}: ${e.item ?? ''} (${e.loaded}/${e.total})`);
        }
      },
    });
    model = m;
    modelKey = want.key;
    progress(bar, 1);
    status(st, `Ready: ${files!.name} · ${mb(modelBytes(files!))} of files · loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s · ${m.backend.description} · attention ${m.attention.method}`);
    showModelInfo(m);
    if (announce) setState('model', 'ready');
  })();
  loading = run;
  try {
    await run;
  } catch (e) {
    setState('model', 'error');
    status(st, `Could not load the model: ${errorText(e)}`, true);
    throw e;
  } finally {
    loading = null;
  }
  return model!;
}

function showModelInfo(m: HipModel): void {
  const c = m.config;
  $('model-info').textContent =
    `${c.numLayers} layers · ${c.numHeads} heads (${c.numKvHeads} KV) · head dim ${c.headDim} · hidden ${c.hiddenSize} · vocab ${c.vocabSize} · ` +
    `context ${m.contextLength} tokens · device memory ${mb(m.backend.memoryBytes())}`;
}

/** A new set of model files: open them in the worker and load the runtime model. */
async function useFiles(f: ModelFiles): Promise<void> {
  setState('model', 'loading');
  setState('vis', 'none');
  files = f;
  if (model) await model.dispose().catch(() => undefined);
  model = null;
  modelKey = '';
  analysis = null;
  $('vis').hidden = true;
  ($('generate') as HTMLButtonElement).disabled = true;
  ($('analyse') as HTMLButtonElement).disabled = true;
  const opened = ask<'opened'>({ type: 'open', model: f });
  try {
    await ensureModel(false);
    await opened;
    ($('generate') as HTMLButtonElement).disabled = false;
    ($('analyse') as HTMLButtonElement).disabled = false;
    updatePromptInfo();
    setState('model', 'ready');
  } catch (e) {
    status($('load-status'), `Could not load the model: ${errorText(e)}`, true);
    setState('model', 'error');
  }
}

function setupModelInputs(): void {
  const st = $('load-status');
  const bar = $('load-bar');
  const fromFiles = (list: File[], folder?: string) => {
    try {
      progress(bar, 0.5);
      void useFiles(modelFromFiles(list, folder));
    } catch (e) {
      status(st, errorText(e), true);
    }
  };
  $<HTMLInputElement>('file-input').addEventListener('change', (e) => fromFiles([...((e.target as HTMLInputElement).files ?? [])]));
  $<HTMLInputElement>('folder-input').addEventListener('change', (e) => fromFiles([...((e.target as HTMLInputElement).files ?? [])]));
  const drop = $('drop-zone');
  for (const ev of ['dragenter', 'dragover']) {
    drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.add('over');
    });
  }
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (!e.dataTransfer) return;
    void filesFromDrop(e.dataTransfer).then(
      ({ files: list, folder }) => fromFiles(list, folder),
      (err: unknown) => status(st, errorText(err), true),
    );
  });
  // Dropping a file anywhere else must not navigate away from the app.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());

  const loadUrl = async () => {
    const url = $<HTMLInputElement>('url-input').value.trim();
    if (!url) return;
    setState('model', 'loading');
    progress(bar, 0);
    try {
      const apiKey = $<HTMLInputElement>('api-key-input').value.trim();
      const f = await fetchModel(
        url,
        (p) => {
          progress(bar, p.total > 0 ? (0.5 * p.loaded) / p.total : 0.25);
          status(st, `Downloading ${p.file} · ${mb(p.loaded)}${p.total > 0 ? ` of ${mb(p.total)}` : ''}`);
        },
        apiKey ? { apiKey } : {},
      );
      await useFiles(f);
    } catch (e) {
      setState('model', 'error');
      status(st, `Could not fetch the model: ${errorText(e)}`, true);
    }
  };
  $('url-load').addEventListener('click', () => void loadUrl());
  $<HTMLInputElement>('url-input').addEventListener('keydown', (e) => e.key === 'Enter' && void loadUrl());

  // Served by `hipattn serve --ui`: the server's model is listed at ./model/files.json.
  void fetch(new URL('model/files.json', location.href))
    .then((r) => {
      if (r.status === 401) {
        // `hipattn serve --api-key`: the model's files need the key.
        $<HTMLInputElement>('api-key-input').hidden = false;
        $<HTMLInputElement>('url-input').value = new URL('model/', location.href).href;
        status(st, 'The server offers its model at ./model/ but needs its API key: enter it, then press "Load URL".');
      }
      return r.ok ? (r.json() as Promise<{ name?: string }>) : null;
    })
    .then((m) => {
      if (!m) return;
      $<HTMLInputElement>('url-input').value = new URL('model/', location.href).href;
      status(st, `The server offers its model ${m.name ?? ''} at ./model/ — press "Load URL" (or pick local files).`);
    })
    .catch(() => undefined);
  const q = new URLSearchParams(location.search).get('model');
  if (q) {
    $<HTMLInputElement>('url-input').value = q;
    void loadUrl();
  }
}

// ---------------------------------------------------------------------------------------------
// Prompt and generation

const TOKENS_PER_CHAR_GUESS = 0.27;

/** A passkey prompt of about `tokens` tokens (the layout the hip-testbed models were trained on). */
function passkeyPrompt(tokens: number, depth = 0.3): string {
  const ratio = model ? model.encode(haystack.slice(0, 20000)).length / 20000 : TOKENS_PER_CHAR_GUESS;
  const key = String(10000 + Math.floor(Math.random() * 90000));
  const needle = ` ${passkeyNeedle(key)}`;
  const question = `\n${PASSKEY_QUESTION}`;
  const fillerChars = Math.max(40, Math.floor((tokens - 1) / ratio - needle.length - question.length));
  // Whole words only (cut at the last whitespace).
  const cut = haystack.slice(0, fillerChars + 1);
  const filler = cut.slice(0, Math.max(1, cut.search(/\s\S*$/))).replace(/\s+$/, '');
  let at = Math.floor(filler.length * depth);
  const stop = filler.indexOf('. ', at);
  if (stop >= 0 && stop < filler.length - 2) at = stop + 1;
  return `${filler.slice(0, at)}${needle}${filler.slice(at)}${question}`;
}

/** Tells when the prompt or the options no longer match what the visualiser shows. */
function markStale(): void {
  if (!analysis) return;
  let now = '';
  try {
    const { hip, streaming } = readOptions();
    now = JSON.stringify([$<HTMLTextAreaElement>('prompt').value, hip, streaming]);
  } catch {
    now = '';
  }
  const stale = now !== analysedWith;
  const el = $('vis-stale');
  el.hidden = !stale;
}

/** Shows the pass key the prompt plants (if it has the passkey needle); clears the last answer's mark. */
function showPasskey(): string | null {
  const el = $('passkey');
  const found = findPasskey($<HTMLTextAreaElement>('prompt').value);
  el.hidden = !found;
  el.dataset.key = found?.key ?? '';
  delete el.dataset.correct;
  el.replaceChildren(...(found ? ['planted pass key ', h('b', { id: 'passkey-key' }, found.key)] : []));
  return found?.key ?? null;
}

/** Marks the generated answer right (its first number is the planted key) or wrong. */
function markPasskey(key: string, generated: string): void {
  const el = $('passkey');
  if (el.dataset.key !== key) return; // the prompt changed while generating
  const right = passkeyCorrect(generated, key);
  const answer = firstNumber(generated);
  el.dataset.correct = String(right);
  el.append(
    ' · ',
    h('span', { id: 'passkey-mark', class: right ? 'right' : 'wrong', title: 'the first number of the generated text against the planted key' }, right ? `✓ answered ${answer}` : `✗ answered ${answer ?? 'no number'}`),
  );
}

function updatePromptInfo(): void {
  markStale();
  showPasskey();
  const text = $<HTMLTextAreaElement>('prompt').value;
  const el = $('prompt-tokens');
  let hint = '';
  try {
    const { hip } = readOptions();
    const full = hip.sinkTokens + hip.slidingWindow + hip.topK;
    hint = ` · HiP has to choose only for queries past ${full} tokens (sink + window + top-k)`;
  } catch (e) {
    hint = ` · ${errorText(e)}`;
  }
  el.textContent = model ? `${model.encode(text).length} tokens${hint}` : hint.slice(3);
}

let abort: AbortController | null = null;

async function generate(): Promise<void> {
  const genBtn = $<HTMLButtonElement>('generate');
  const stopBtn = $<HTMLButtonElement>('stop');
  const out = $('output');
  const stats = $('gen-stats');
  const bar = $('gen-bar');
  genBtn.disabled = true;
  setState('gen', 'running');
  try {
    const m = await ensureModel();
    const text = $<HTMLTextAreaElement>('prompt').value;
    const maxNewTokens = Number($<HTMLInputElement>('max-new').value);
    const temperature = Number($<HTMLInputElement>('temperature').value);
    out.replaceChildren(h('span', { class: 'prompt-echo' }, text.length > 600 ? `…${text.slice(-600)}` : text));
    const gen = h('span', { class: 'gen' });
    out.append(gen);
    stats.replaceChildren(h('span', {}, 'prefill…'));
    const key = showPasskey();
    const t0 = performance.now();
    const onPrefillProgress = (done: number, total: number) => {
      progress(bar, done / total);
      bar.dataset.done = String(done);
      bar.dataset.total = String(total);
      stats.replaceChildren(h('span', {}, `prefill ${done} / ${total} tokens · ${((performance.now() - t0) / 1000).toFixed(1)} s`));
    };
    progress(bar, 0);
    bar.dataset.done = '0';
    delete bar.dataset.total;
    abort = new AbortController();
    stopBtn.disabled = false;
    const it = m.stream(text, { maxNewTokens, temperature, signal: abort.signal, onPrefillProgress });
    let first = 0;
    let count = 0;
    let result: GenerationStats;
    for (;;) {
      const r = await it.next();
      if (r.done) {
        result = r.value;
        break;
      }
      if (r.value.id !== null) count++;
      if (count === 1 && first === 0) first = performance.now();
      gen.textContent += r.value.text;
      out.scrollTop = out.scrollHeight;
      const secs = (performance.now() - first) / 1000;
      stats.replaceChildren(
        h('span', {}, `prefill ${((first - t0) / 1000).toFixed(2)} s`),
        h('span', {}, `${count} tokens${count > 1 && secs > 0 ? ` · ${((count - 1) / secs).toFixed(1)} tok/s` : ''}`),
      );
    }
    stats.replaceChildren(
      stat('prompt', `${result.promptTokens} tokens`),
      stat('prefill', `${result.prefillTokensPerSecond.toFixed(1)} tok/s (${(result.prefillMs / 1000).toFixed(2)} s)`),
      stat('decode', `${result.decodeTokensPerSecond.toFixed(1)} tok/s (${result.ids.length} tokens, ${(result.decodeMs / 1000).toFixed(2)} s)`),
      stat('memory', mb(m.backend.memoryBytes())),
      stat('attention', m.attention.method),
      stat('finish', result.finishReason),
    );
    stats.dataset.decodeTokens = String(result.ids.length);
    if (key !== null) markPasskey(key, result.text);
    showModelInfo(m);
    setState('gen', 'done');
  } catch (e) {
    stats.replaceChildren(h('span', { class: 'error' }, `Generation failed: ${errorText(e)}`));
    setState('gen', 'error');
  } finally {
    abort = null;
    genBtn.disabled = !files;
    stopBtn.disabled = true;
  }
}

function stat(label: string, value: string): HTMLElement {
  return h('span', { 'data-stat': label }, `${label} `, h('b', {}, value));
}

// ---------------------------------------------------------------------------------------------
// Visualiser

let analysis: AnalysisSummary | null = null;
/** The prompt and options the current analysis was made with. */
let analysedWith = '';
const vis = { layer: 0, head: 0, query: 0, method: 'hip' as Method };
let lastQuery: QueryAnswer | null = null;
let lastMatrix: MatrixAnswer | null = null;
let tokenSpans: HTMLSpanElement[] = [];
/** The pass key the analysed prompt plants and its tokens (null: no needle). */
let needle: { key: string; tokens: number[] } | null = null;
let requestSeq = 0;

async function analyse(): Promise<void> {
  const btn = $<HTMLButtonElement>('analyse');
  const bar = $('vis-bar');
  const st = $('analyse-status');
  btn.disabled = true;
  setState('vis', 'running');
  try {
    const { hip, streaming } = readOptions();
    const text = $<HTMLTextAreaElement>('prompt').value;
    const maxTokens = Math.max(2, Number($<HTMLInputElement>('vis-max').value) || 2048);
    const t0 = performance.now();
    const r = await ask<'analysed'>({ type: 'analyse', text, hip, streaming, maxTokens }, (f, label) => {
      progress(bar, f);
      status(st, `${label} · ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    });
    progress(bar, 1);
    analysis = r.summary;
    analysedWith = JSON.stringify([text, hip, streaming]);
    markStale();
    const s = analysis;
    needle = needleTokens(s.tokens, s.special);
    status(
      st,
      `${s.ids.length} tokens${s.truncated ? ' (prompt cut to the limit)' : ''} · CPU forward pass ${(s.captureMs / 1000).toFixed(1)} s · masks and recall ${(s.masksMs / 1000).toFixed(1)} s` +
        (needle ? ` · pass key ${needle.key} in tokens ${needle.tokens.join(', ')}` : ''),
    );
    setupVisControls(s);
    $('vis').hidden = false;
    await refreshVis(true);
    setState('vis', 'ready');
  } catch (e) {
    status(st, `Analysis failed: ${errorText(e)}`, true);
    setState('vis', 'error');
  } finally {
    btn.disabled = !files;
  }
}

function setupVisControls(s: AnalysisSummary): void {
  const layerSel = $<HTMLSelectElement>('vis-layer');
  layerSel.replaceChildren(...Array.from({ length: s.layers }, (_, l) => h('option', { value: String(l) }, `${l}${l < s.hip.denseLayers ? ' (dense in the runtime)' : ''}`)));
  const headSel = $<HTMLSelectElement>('vis-head');
  const group = s.heads / s.kvHeads;
  headSel.replaceChildren(...Array.from({ length: s.heads }, (_, hd) => h('option', { value: String(hd) }, `${hd} (KV ${Math.floor(hd / group)})`)));
  vis.layer = Math.min(Math.max(vis.layer, s.hip.denseLayers), s.layers - 1);
  vis.head = Math.min(vis.head, s.heads - 1);
  vis.query = s.ids.length - 1;
  layerSel.value = String(vis.layer);
  headSel.value = String(vis.head);
  const range = $<HTMLInputElement>('vis-query-range');
  range.max = String(s.ids.length - 1);
  range.value = String(vis.query);
  const num = $<HTMLInputElement>('vis-query');
  num.max = String(s.ids.length - 1);
  num.value = String(vis.query);
  buildTokens(s);
  buildSummary(s);
}

function buildTokens(s: AnalysisSummary): void {
  const box = $('vis-tokens');
  const inNeedle = new Set(needle?.tokens ?? []);
  tokenSpans = s.tokens.map((t, i) => {
    const special = s.special[i]!;
    const text = special ? t.replace(/^<\|?|\|?>$/g, '') : t === '' ? '·' : t.replace(/\n/g, '↵\n');
    const cls = [special ? 'special' : '', inNeedle.has(i) ? 'needle' : ''].filter(Boolean).join(' ');
    const title = `token ${i}: ${JSON.stringify(t)} (id ${s.ids[i]})${inNeedle.has(i) ? ' — the pass key' : ''}`;
    return h('span', { 'data-i': String(i), title, ...(cls ? { class: cls } : {}) }, text);
  });
  box.dataset.needle = needle?.tokens.join(',') ?? '';
  box.replaceChildren(...tokenSpans);
}

function recallColor(x: number): string {
  // red (0) → amber (0.5) → green (1)
  const hue = Math.round(120 * Math.max(0, Math.min(1, x)));
  return `hsl(${hue} 62% 80%)`;
}

function buildSummary(s: AnalysisSummary): void {
  const byLayer = new Map<number, RecallRow[]>();
  for (const r of s.rows) (byLayer.get(r.layer) ?? byLayer.set(r.layer, []).get(r.layer)!).push(r);
  const head = h('tr', {}, h('th', {}, 'layer'), ...Array.from({ length: s.heads }, (_, i) => h('th', {}, `head ${i}`)), h('th', { title: 'mean over heads of the dense attention mass on the keys each method reads' }, 'mass HiP / top-k / SLLM'));
  const rows = [...byLayer.entries()].map(([l, rs]) => {
    const cells = rs.map((r) => {
      const choose = r.queryBlocks > 0;
      const td = h(
        'td',
        {
          'data-layer': String(l),
          'data-head': String(r.head),
          title:
            `layer ${l} head ${r.head} (${r.runtime} in the runtime): ` +
            (choose ? `recall ${pct(r.recall)} over ${r.queryBlocks} query blocks; ` : 'HiP reads every candidate key (nothing to choose); ') +
            `attention mass on the keys read — HiP ${pct(r.massHip)}, exact top-k ${pct(r.massTopK)}, StreamingLLM ${pct(r.massStreaming)}`,
        },
        choose ? pct(r.recall, 0) : '—',
      );
      td.style.background = choose ? recallColor(r.recall) : '#eef0f3';
      return td;
    });
    const mean = (k: 'massHip' | 'massTopK' | 'massStreaming') => rs.reduce((a, r) => a + r[k], 0) / rs.length;
    return h('tr', {}, h('th', {}, `${l}${l < s.hip.denseLayers ? '*' : ''}`), ...cells, h('td', { class: 'mass' }, `${pct(mean('massHip'), 0)} / ${pct(mean('massTopK'), 0)} / ${pct(mean('massStreaming'), 0)}`));
  });
  const table = h('table', {}, h('thead', {}, head), h('tbody', {}, ...rows));
  table.addEventListener('click', (e) => {
    const td = (e.target as HTMLElement).closest('td[data-layer]') as HTMLElement | null;
    if (!td) return;
    vis.layer = Number(td.dataset.layer);
    vis.head = Number(td.dataset.head);
    $<HTMLSelectElement>('vis-layer').value = String(vis.layer);
    $<HTMLSelectElement>('vis-head').value = String(vis.head);
    void refreshVis(true);
  });
  const note = h('div', { class: 'caption' }, s.hip.denseLayers > 0 ? `* dense in the runtime (the first ${s.hip.denseLayers} layers); their HiP masks are shown for comparison. ` : '', '— : HiP reads every candidate key there.');
  $('vis-summary').replaceChildren(table, note);
}

function markSummary(): void {
  for (const td of $('vis-summary').querySelectorAll<HTMLElement>('td[data-layer]')) {
    td.classList.toggle('sel', Number(td.dataset.layer) === vis.layer && Number(td.dataset.head) === vis.head);
  }
}

/** Asks the worker for the current (layer, head, query, method), and the matrix when `matrix`. */
async function refreshVis(matrix: boolean): Promise<void> {
  if (!analysis) return;
  const seq = ++requestSeq;
  markSummary();
  try {
    const q = await ask<'query'>({ type: 'query', layer: vis.layer, head: vis.head, index: vis.query, method: vis.method });
    if (seq !== requestSeq && !matrix) return;
    lastQuery = q.answer;
    if (matrix || !lastMatrix || lastMatrix.layer !== vis.layer || lastMatrix.head !== vis.head || lastMatrix.method !== vis.method) {
      const m = await ask<'matrix'>({ type: 'matrix', layer: vis.layer, head: vis.head, method: vis.method, maxSide: 512 });
      lastMatrix = m.answer;
    }
    if (seq !== requestSeq) return;
    drawQuery();
  } catch (e) {
    status($('analyse-status'), errorText(e), true);
  }
}

function drawQuery(): void {
  const s = analysis;
  const q = lastQuery;
  if (!s || !q) return;
  const T = s.ids.length;
  // Figures.
  const f = q.figures;
  const m = vis.method;
  const bq = s.hip.blockSizeQ;
  const choose = q.candidateBlocks > q.blocksPerQuery;
  const hit = q.exactBlocks.filter((b) => q.hipBlocks.includes(b)).length;
  const figures = $('vis-figures');
  figures.dataset.recall = q.recall.toFixed(4);
  figures.dataset.hipBlocks = String(q.hipBlocks.length);
  figures.dataset.massHip = f.hip.mass.toFixed(4);
  // HiP's selected keys are the categories' Both + HipOnly only while HiP is shown.
  if (m === 'hip') figures.dataset.hipSelected = String(countCat(q.categories, Cat.Both) + countCat(q.categories, Cat.HipOnly));
  else delete figures.dataset.hipSelected;
  // The cards below: the method shown (the same figures as its row of the table).
  figures.dataset.method = m;
  figures.dataset.keys = String(f[m].keys);
  figures.dataset.topKRead = f[m].topKRead.toFixed(4);
  figures.dataset.mass = f[m].mass.toFixed(4);
  const topKNote =
    m === 'hip'
      ? `of the exact top-k keys; HiP kept ${hit} of the ${q.exactBlocks.length} exact top-k blocks (recall ${pct(q.recall)})`
      : m === 'streaming'
        ? 'of the exact top-k keys lie in its sink + window'
        : 'of the exact top-k keys (dense reads every key)';
  const tokText = JSON.stringify(s.tokens[q.index] ?? '');
  figures.replaceChildren(
    h('div', { class: 'headline' }, `Layer ${q.layer} · head ${q.head} · query ${q.index} ${tokText} · query block ${q.queryBlock} (queries ${q.queryBlock * bq}–${Math.min(T, (q.queryBlock + 1) * bq) - 1})`),
    h(
      'div',
      { class: 'kpis' },
      h('div', { class: 'kpi' }, h('span', { class: 'big', id: 'vis-keys' }, `${f[m].keys} keys`), h('small', {}, `${METHOD_LABEL[m]} reads of the ${q.position + 1} up to the query`)),
      h('div', { class: 'kpi' }, h('span', { class: 'big', id: 'vis-topk' }, `top-k read ${pct(f[m].topKRead)}`), h('small', {}, topKNote)),
      h('div', { class: 'kpi' }, h('span', { class: 'big', id: 'vis-mass' }, `mass ${pct(f[m].mass, 2)}`), h('small', {}, `of the dense attention on the keys ${METHOD_LABEL[m]} reads`)),
    ),
    h(
      'div',
      { class: 'muted' },
      choose
        ? `HiP's tree search chose ${q.hipBlocks.length} of ${q.candidateBlocks} candidate key blocks (${s.hip.blockSizeK} keys each) for this query block.`
        : `Only ${q.candidateBlocks} candidate key blocks ≤ ${q.blocksPerQuery} slots: HiP reads every key here (nothing to choose).`,
    ),
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, h('th', {}, 'method'), h('th', {}, 'keys read'), h('th', { title: 'fraction of the exact top-k blocks’ keys the method reads' }, 'exact top-k read'), h('th', { title: 'fraction of the dense softmax attention mass on the keys the method reads' }, 'attention mass'))),
      h(
        'tbody',
        {},
        ...(['dense', 'hip', 'streaming'] as Method[]).map((row) =>
          h('tr', { 'data-method': row, ...(row === m ? { class: 'on' } : {}) }, h('td', {}, METHOD_LABEL[row]), h('td', {}, `${f[row].keys} / ${q.position + 1}`), h('td', {}, pct(f[row].topKRead)), h('td', {}, pct(f[row].mass, 2))),
        ),
      ),
    ),
  );
  $('vis-legend').replaceChildren(
    ...legend(vis.method).map(([c, label]) => h('span', {}, h('i', { style: `background:${CAT_COLOR[c]}` }), label)),
    ...(needle ? [h('span', {}, h('i', { class: 'needle' }), `pass key ${needle.key} (tick above the strip, bold token)`)] : []),
  );
  // Tokens.
  for (let i = 0; i < tokenSpans.length; i++) {
    const span = tokenSpans[i]!;
    const c = q.categories[i]! as Cat;
    span.classList.toggle('q', i === q.index);
    span.classList.toggle('future', c === Cat.Future);
    const col = CAT_COLOR[c];
    span.style.background = c === Cat.Future || c === Cat.NotRead ? '' : `${col}40`;
    span.style.borderBottomColor = c === Cat.Future ? 'transparent' : col;
  }
  const qs = tokenSpans[q.index];
  if (qs) {
    const box = $('vis-tokens');
    const top = qs.offsetTop - box.offsetTop;
    if (top < box.scrollTop || top > box.scrollTop + box.clientHeight - 20) box.scrollTop = Math.max(0, top - box.clientHeight / 2);
  }
  drawStrip(q, T);
  drawMatrix(q);
}

function countCat(a: Uint8Array, c: number): number {
  let n = 0;
  for (const x of a) if (x === c) n++;
  return n;
}

/** The needle's colour (ticks over the strip; the same as .needle in style.css). */
const NEEDLE_COLOR = '#d4008a';

function drawStrip(q: QueryAnswer, T: number): void {
  const canvas = $<HTMLCanvasElement>('vis-strip');
  const dpr = window.devicePixelRatio || 1;
  const W = Math.max(100, Math.round(canvas.clientWidth * dpr));
  const H = Math.round(54 * dpr);
  canvas.width = W;
  canvas.height = H;
  const ctx = canvas.getContext('2d')!;
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, W, H);
  // Rows: the needle's ticks [0, band), the categories [band + gap, top), the weights [top + gap, H).
  const band = Math.round(6 * dpr);
  const top = Math.round(32 * dpr);
  const gap = Math.round(2 * dpr);
  const x0 = (t: number) => Math.floor((t * W) / T);
  const x1 = (t: number) => Math.max(x0(t) + 1, Math.floor(((t + 1) * W) / T));
  ctx.fillStyle = NEEDLE_COLOR;
  for (const t of needle?.tokens ?? []) if (t < T) ctx.fillRect(x0(t), 0, x1(t) - x0(t), band);
  canvas.dataset.needle = needle?.tokens.join(',') ?? '';
  let maxP = 0;
  for (const p of q.probs) maxP = Math.max(maxP, p);
  // Categories, drawn in priority order so that narrow keys stay visible when T > width.
  const order: Cat[] = [Cat.NotRead, Cat.Read, Cat.Window, Cat.Sink, Cat.Both, Cat.HipOnly, Cat.ExactOnly];
  for (const c of order) {
    ctx.fillStyle = CAT_COLOR[c];
    for (let t = 0; t < T; t++) {
      if (q.categories[t] === c) ctx.fillRect(x0(t), band + gap, x1(t) - x0(t), top - band - gap);
    }
  }
  for (let t = 0; t < q.probs.length; t++) {
    const v = maxP > 0 ? Math.sqrt(q.probs[t]! / maxP) : 0;
    if (v < 0.03) continue;
    ctx.fillStyle = `rgba(12, 20, 48, ${Math.min(1, 1.2 * v).toFixed(3)})`;
    ctx.fillRect(x0(t), top + gap, x1(t) - x0(t), H - top - gap);
  }
  const xq = Math.floor(((q.index + 0.5) * W) / T);
  ctx.fillStyle = '#000';
  ctx.fillRect(Math.min(W - 2 * dpr, xq), band + gap, Math.max(1, Math.round(2 * dpr)), H - band - gap);
}

function drawMatrix(q: QueryAnswer): void {
  const m = lastMatrix;
  if (!m) return;
  const canvas = $<HTMLCanvasElement>('vis-matrix');
  canvas.width = m.side;
  canvas.height = m.side;
  const ctx = canvas.getContext('2d')!;
  const img = ctx.createImageData(m.side, m.side);
  const rgb = Object.fromEntries(Object.entries(CAT_COLOR).map(([k, v]) => [k, [parseInt(v.slice(1, 3), 16), parseInt(v.slice(3, 5), 16), parseInt(v.slice(5, 7), 16)]])) as Record<string, number[]>;
  for (let i = 0; i < m.cells.length; i++) {
    const c = rgb[m.cells[i]!]!;
    img.data[4 * i] = c[0]!;
    img.data[4 * i + 1] = c[1]!;
    img.data[4 * i + 2] = c[2]!;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  const row = Math.floor((q.index * m.side) / m.tokens);
  ctx.fillStyle = 'rgba(0,0,0,0.85)';
  ctx.fillRect(0, row, m.side, Math.max(1, Math.round(m.side / 260)));
}

function setupVis(): void {
  const setQuery = (i: number) => {
    if (!analysis) return;
    vis.query = Math.max(0, Math.min(analysis.ids.length - 1, Math.round(i)));
    $<HTMLInputElement>('vis-query-range').value = String(vis.query);
    $<HTMLInputElement>('vis-query').value = String(vis.query);
    void refreshVis(false);
  };
  $<HTMLInputElement>('vis-query-range').addEventListener('input', (e) => setQuery(Number((e.target as HTMLInputElement).value)));
  $<HTMLInputElement>('vis-query').addEventListener('change', (e) => setQuery(Number((e.target as HTMLInputElement).value)));
  $('vis-tokens').addEventListener('click', (e) => {
    const span = (e.target as HTMLElement).closest('span[data-i]') as HTMLElement | null;
    if (span) setQuery(Number(span.dataset.i));
  });
  $('vis-matrix').addEventListener('click', (e) => {
    if (!analysis) return;
    const r = (e.target as HTMLCanvasElement).getBoundingClientRect();
    setQuery(((e.clientY - r.top) / r.height) * analysis.ids.length);
  });
  $<HTMLSelectElement>('vis-layer').addEventListener('change', (e) => {
    vis.layer = Number((e.target as HTMLSelectElement).value);
    void refreshVis(true);
  });
  $<HTMLSelectElement>('vis-head').addEventListener('change', (e) => {
    vis.head = Number((e.target as HTMLSelectElement).value);
    void refreshVis(true);
  });
  for (const b of $('vis-method').querySelectorAll<HTMLButtonElement>('button')) {
    b.addEventListener('click', () => {
      vis.method = b.dataset.method as Method;
      for (const o of $('vis-method').querySelectorAll('button')) o.classList.toggle('on', o === b);
      void refreshVis(true);
    });
  }
  window.addEventListener('resize', () => lastQuery && analysis && drawStrip(lastQuery, analysis.ids.length));
}

// ---------------------------------------------------------------------------------------------

function main(): void {
  buildOptions();
  setupModelInputs();
  setupVis();
  const prompt = $<HTMLTextAreaElement>('prompt');
  const passkeyTokens = () => Math.max(64, Number($<HTMLInputElement>('passkey-tokens').value) || 1024);
  prompt.value = passkeyPrompt(passkeyTokens());
  prompt.addEventListener('input', () => updatePromptInfo());
  $('example-passkey').addEventListener('click', () => {
    prompt.value = passkeyPrompt(passkeyTokens());
    updatePromptInfo();
  });
  $<HTMLSelectElement>('preset').addEventListener('change', (e) => applyPreset((e.target as HTMLSelectElement).value));
  for (const r of document.querySelectorAll<HTMLInputElement>('input[name="method"]')) r.addEventListener('change', onOptionsChanged);
  for (const input of [...optionInputs.values(), representative]) input.addEventListener('change', () => updatePromptInfo());
  $('generate').addEventListener('click', () => void generate());
  $('stop').addEventListener('click', () => abort?.abort());
  $('analyse').addEventListener('click', () => void analyse());
  setState('model', 'none');
  void initGpu().then(() => setState('gpu', gpu ? 'webgpu' : 'none'));
  updatePromptInfo();
}

main();
