/**
 * Running the evaluations on a model: perplexity over windows of text files, and retrieval
 * tasks (passkey, key–value, needle-in-a-haystack) over a grid of lengths × depths × trials,
 * for each attention method. Backend-independent (it only calls HipModel.forward/reset), so the
 * same code runs on the CPU and on WebGPU.
 *
 * Methods run one after the other (one model loaded at a time, so a large model fits); a cell
 * (one method at one file × context, or one length × depth) is reported through `onCell` as soon
 * as it is finished, so a caller can save results as they come and an interrupted run
 * (`signal`) keeps every finished cell.
 */
import type { AttentionMethod } from '../attention/method.js';
import { HipAttnError } from '../errors.js';
import type { HipModel } from '../runtime/model.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { NllAccumulator, passkeyCorrect, perplexityWindows, type PerplexityRow, retrievalRow, type RetrievalRow, substringCorrect, sumNll } from './metrics.js';
import type { RetrievalPrompt, RetrievalTask } from './prompts.js';

/** Loads the model with one attention method and a KV cache of at least `contextLength` tokens. */
export type ModelLoader = (method: AttentionMethod, contextLength: number) => Promise<HipModel>;

export interface EvalProgress {
  /** Fraction of the whole run done, 0…1. */
  fraction: number;
  /** What is running now, e.g. "hip 4096 @50% trial 3/10". */
  label: string;
}

export interface RunHooks<Row> {
  onProgress?: (p: EvalProgress) => void;
  /** A finished cell, with every row finished so far and the time spent so far per method. */
  onCell?: (row: Row, rows: readonly Row[], timings: readonly MethodTiming[]) => void | Promise<void>;
  /** Stops the run after the current step; finished cells are kept. */
  signal?: AbortSignal;
  /** Called once per loaded model (e.g. to record the device). */
  onModel?: (model: HipModel, method: AttentionMethod) => void;
}

/** Time spent by one attention method (model loading excluded). */
export interface MethodTiming {
  attention: AttentionMethod;
  seconds: number;
  /** Tokens run through the model (prompt + generated, or scored windows). */
  tokens: number;
}

export interface RunResult<Row> {
  rows: Row[];
  timings: MethodTiming[];
  /** True when the run was stopped through the signal before the end. */
  interrupted: boolean;
}

class Aborted extends Error {}

/** Lets pending events (a signal handler, a progress redraw) run between long synchronous steps. */
const breathe = () => new Promise<void>((r) => setImmediate(r));

/** A prefill chunk that is a multiple of HiP's query block (so chunked = whole prefill masks). */
export function prefillChunk(model: HipModel): number {
  const b = model.attention.hip.blockSizeQ;
  return Math.max(b, Math.floor(512 / b) * b);
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/**
 * Greedy decoding of up to `maxNewTokens` tokens after `ids` (the KV cache is reset first),
 * stopping at EOS/BOS. The prompt is fed in chunks with a pause between them, so progress is
 * reported and an abort is seen during a long prefill.
 */
export async function greedyContinuation(
  model: HipModel,
  ids: readonly number[],
  maxNewTokens: number,
  opts: {
    signal?: AbortSignal;
    onPrefill?: (done: number) => void;
    /**
     * Prefill all but the last prompt token, then feed the last one as a decoding step: with
     * HiP its mask is then estimated for that query alone instead of being shared with the
     * rest of its query block (see `hipattn eval recall`). Dense and StreamingLLM are unchanged.
     */
    lastTokenAsDecode?: boolean;
  } = {},
): Promise<{ ids: number[]; text: string }> {
  if (ids.length === 0) throw new HipAttnError('INVALID_OPTION', 'empty prompt');
  if (ids.length + maxNewTokens > model.contextLength) {
    throw new HipAttnError('INVALID_OPTION', `prompt (${ids.length}) + ${maxNewTokens} new tokens exceed the context length ${model.contextLength}`);
  }
  const tok = model.tokenizer;
  const stops = new Set([...tok.eosTokenIds, ...(tok.bosTokenId !== undefined ? [tok.bosTokenId] : [])]);
  const chunk = prefillChunk(model);
  model.reset();
  let logits: Float32Array = new Float32Array(0);
  const prefill = opts.lastTokenAsDecode && ids.length > 1 ? ids.length - 1 : ids.length;
  for (let s = 0; s < prefill; s += chunk) {
    const part = ids.slice(s, Math.min(s + chunk, prefill));
    const last = s + part.length >= ids.length;
    logits = await model.forward(part, { logits: last ? 'last' : 'none', chunkSize: chunk });
    opts.onPrefill?.(s + part.length);
    await breathe();
    if (opts.signal?.aborted) throw new Aborted();
  }
  if (prefill < ids.length) logits = await model.forward([ids[ids.length - 1]!], { logits: 'last' });
  const out: number[] = [];
  while (out.length < maxNewTokens) {
    const id = argmax(logits);
    if (stops.has(id)) break;
    out.push(id);
    if (out.length < maxNewTokens) logits = await model.forward([id], { logits: 'last' });
  }
  return { ids: out, text: tok.decode(out, { skipSpecialTokens: true }) };
}

/** Whether a generated text answers a prompt. */
export function isCorrect(prompt: Pick<RetrievalPrompt, 'check' | 'answer'>, text: string): boolean {
  return prompt.check === 'first-number' ? passkeyCorrect(text, prompt.answer) : substringCorrect(text, prompt.answer);
}

export interface RetrievalSpec {
  methods: readonly AttentionMethod[];
  lengths: readonly number[];
  depths: readonly number[];
  trials: number;
  /**
   * Index of the first trial (default 0): trials firstTrial … firstTrial + trials − 1 run, so one
   * trial of an earlier run (its JSON `trial`) can be run again alone with the same seed.
   */
  firstTrial?: number;
  /** See greedyContinuation. Default false (as HipModel.generate). */
  lastTokenAsDecode?: boolean;
}

/** One trial's prompt and output (kept for inspection in the JSON). */
export interface TrialRecord {
  length: number;
  depth: number;
  attention: AttentionMethod;
  trial: number;
  answer: string;
  output: string;
  correct: boolean;
}

export interface RetrievalResult extends RunResult<RetrievalRow> {
  outputs: TrialRecord[];
}

function checkGrid(spec: RetrievalSpec): void {
  if (spec.methods.length === 0) throw new HipAttnError('INVALID_OPTION', 'no attention method given');
  if (spec.lengths.length === 0 || spec.lengths.some((l) => !Number.isSafeInteger(l) || l < 16)) {
    throw new HipAttnError('INVALID_OPTION', `lengths must be integers ≥ 16, got ${spec.lengths.join(',')}`);
  }
  if (spec.depths.length === 0 || spec.depths.some((d) => !(d >= 0 && d <= 1))) {
    throw new HipAttnError('INVALID_OPTION', `depths must be in [0, 1], got ${spec.depths.join(',')}`);
  }
  if (!Number.isSafeInteger(spec.trials) || spec.trials < 1) throw new HipAttnError('INVALID_OPTION', `trials must be ≥ 1, got ${spec.trials}`);
  const first = spec.firstTrial ?? 0;
  if (!Number.isSafeInteger(first) || first < 0) throw new HipAttnError('INVALID_OPTION', `the first trial must be an integer ≥ 0, got ${first}`);
}

/**
 * Runs `body` with each method's model in turn (loaded with room for `needed` tokens, disposed
 * after); an abort (Aborted) ends the run early. Resolves to whether it was interrupted.
 */
async function forEachMethod<Row>(
  methods: readonly AttentionMethod[],
  load: ModelLoader,
  needed: number,
  hooks: RunHooks<Row>,
  timings: MethodTiming[],
  body: (model: HipModel, method: AttentionMethod, timing: MethodTiming) => Promise<void>,
): Promise<boolean> {
  try {
    for (const method of methods) {
      const model = await load(method, needed);
      hooks.onModel?.(model, method);
      const timing: MethodTiming = { attention: method, seconds: 0, tokens: 0 };
      timings.push(timing);
      try {
        await body(model, method, timing);
      } finally {
        await model.dispose();
      }
    }
  } catch (e) {
    if (!(e instanceof Aborted)) throw e;
    return true;
  }
  return false;
}

/**
 * A retrieval task over lengths × depths × trials for each method. A task's prompts depend on
 * the tokenizer only, so they are built once with the first model and shared by every method.
 */
export async function runRetrieval(
  makeTask: (tokenizer: TextTokenizer) => RetrievalTask,
  spec: RetrievalSpec,
  load: ModelLoader,
  hooks: RunHooks<RetrievalRow> & { onTrial?: (t: TrialRecord) => void } = {},
): Promise<RetrievalResult> {
  checkGrid(spec);
  const firstTrial = spec.firstTrial ?? 0;
  const maxLength = Math.max(...spec.lengths);
  const perMethod = spec.lengths.reduce((s, l) => s + l * spec.depths.length * spec.trials, 0);
  const totalWork = perMethod * spec.methods.length;
  let doneWork = 0;
  const rows: RetrievalRow[] = [];
  const outputs: TrialRecord[] = [];
  const timings: MethodTiming[] = [];
  let task: RetrievalTask | undefined;
  const prompts = new Map<string, RetrievalPrompt>();
  const interrupted = await forEachMethod(spec.methods, load, maxLength, hooks, timings, async (model, method, timing) => {
    task ??= makeTask(model.tokenizer);
    for (const length of spec.lengths) {
      for (const depth of spec.depths) {
        const outcomes: boolean[] = [];
        for (let trial = firstTrial; trial < firstTrial + spec.trials; trial++) {
          const key = `${length}/${depth}/${trial}`;
          let prompt = prompts.get(key);
          if (!prompt) {
            prompt = task.build(length, depth, trial);
            prompts.set(key, prompt);
          }
          const label = `${method} ${length} @${Math.round(depth * 100)}% trial ${trial - firstTrial + 1}/${spec.trials}`;
          const base = doneWork;
          hooks.onProgress?.({ fraction: doneWork / totalWork, label });
          const t0 = performance.now();
          const gen = await greedyContinuation(model, prompt.ids, prompt.maxNewTokens, {
            signal: hooks.signal,
            lastTokenAsDecode: spec.lastTokenAsDecode,
            onPrefill: (n) => hooks.onProgress?.({ fraction: (base + (n / prompt!.ids.length) * length) / totalWork, label }),
          });
          timing.seconds += (performance.now() - t0) / 1000;
          timing.tokens += prompt.ids.length + gen.ids.length;
          doneWork = base + length;
          const correct = isCorrect(prompt, gen.text);
          outcomes.push(correct);
          const rec: TrialRecord = { length, depth, attention: method, trial, answer: prompt.answer, output: gen.text, correct };
          outputs.push(rec);
          hooks.onTrial?.(rec);
        }
        const row = retrievalRow(length, depth, method, outcomes);
        rows.push(row);
        await hooks.onCell?.(row, rows, timings);
      }
    }
  });
  hooks.onProgress?.({ fraction: interrupted ? doneWork / totalWork : 1, label: interrupted ? 'interrupted' : 'done' });
  return { rows, timings, interrupted, outputs };
}

export interface TextFile {
  /** Name shown in results (e.g. the file's base name). */
  name: string;
  text: string;
}

export interface PerplexitySpec {
  methods: readonly AttentionMethod[];
  contexts: readonly number[];
  /** At most this many windows per file and context (default: all). */
  maxWindows?: number;
}

/**
 * Perplexity of each file at each context length: non-overlapping windows of `context` tokens
 * from the file's start, each fed as BOS + window, every token of the window scored
 * (without a BOS token the window's first token is context only and not scored).
 */
export async function runPerplexity(files: readonly TextFile[], spec: PerplexitySpec, load: ModelLoader, hooks: RunHooks<PerplexityRow> = {}): Promise<RunResult<PerplexityRow>> {
  if (spec.methods.length === 0) throw new HipAttnError('INVALID_OPTION', 'no attention method given');
  if (files.length === 0) throw new HipAttnError('INVALID_OPTION', 'no text file given');
  if (spec.contexts.length === 0 || spec.contexts.some((c) => !Number.isSafeInteger(c) || c < 2)) {
    throw new HipAttnError('INVALID_OPTION', `contexts must be integers ≥ 2, got ${spec.contexts.join(',')}`);
  }
  const maxContext = Math.max(...spec.contexts);
  const rows: PerplexityRow[] = [];
  const timings: MethodTiming[] = [];
  let tokenized: number[][] | undefined;
  let totalWork = 0;
  let doneWork = 0;
  const interrupted = await forEachMethod(spec.methods, load, maxContext, hooks, timings, async (model, method, timing) => {
    const tok = model.tokenizer;
    if (!tokenized) {
      tokenized = files.map((f) => tok.encode(f.text, { addBos: false }));
      for (const t of tokenized) for (const c of spec.contexts) totalWork += perplexityWindows(t.length, c, spec.maxWindows).length * c * spec.methods.length;
      totalWork = Math.max(totalWork, 1);
    }
    const bos = tok.bosTokenId;
    const vocab = model.config.vocabSize;
    const chunk = prefillChunk(model);
    for (let f = 0; f < files.length; f++) {
      const tokens = tokenized[f]!;
      for (const context of spec.contexts) {
        const windows = perplexityWindows(tokens.length, context, spec.maxWindows);
        const acc = new NllAccumulator();
        for (let w = 0; w < windows.length; w++) {
          const win = tokens.slice(windows[w]!.start, windows[w]!.start + context);
          // inputs predict targets: [BOS, t0 … t(L−2)] → [t0 … t(L−1)]; without BOS: [t0 … t(L−2)] → [t1 … t(L−1)]
          const input = bos !== undefined ? [bos, ...win.slice(0, -1)] : win.slice(0, -1);
          const targets = bos !== undefined ? win : win.slice(1);
          const label = `${method} ${files[f]!.name} ${context} window ${w + 1}/${windows.length}`;
          const t0 = performance.now();
          model.reset();
          for (let s = 0; s < input.length; s += chunk) {
            const part = input.slice(s, s + chunk);
            const logits = await model.forward(part, { logits: 'all', chunkSize: chunk });
            acc.add(sumNll(logits, vocab, targets.slice(s, s + part.length)), part.length);
            hooks.onProgress?.({ fraction: (doneWork + s + part.length) / totalWork, label });
            await breathe();
            if (hooks.signal?.aborted) throw new Aborted();
          }
          timing.seconds += (performance.now() - t0) / 1000;
          timing.tokens += input.length;
          doneWork += context;
        }
        if (windows.length === 0) continue; // file shorter than the context: no row
        const row: PerplexityRow = { file: files[f]!.name, context, attention: method, tokens: acc.tokens, nll: acc.nll, ppl: acc.ppl };
        rows.push(row);
        await hooks.onCell?.(row, rows, timings);
      }
    }
  });
  hooks.onProgress?.({ fraction: interrupted ? doneWork / Math.max(totalWork, 1) : 1, label: interrupted ? 'interrupted' : 'done' });
  return { rows, timings, interrupted };
}
