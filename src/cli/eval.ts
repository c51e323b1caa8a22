/**
 * `hipattn eval ppl | passkey | kv | niah | recall`: long-context evaluation of a model with
 * several attention methods, with a progress bar, a table at the end, `--json` (rewritten after
 * every finished cell, so an interrupted run keeps what it finished) and `--chart` (.svg/.png).
 */
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { type Command, Option } from 'commander';
import { type AttentionMethod, type ResolvedAttentionConfig, resolveAttentionConfig } from '../attention/method.js';
import { HipAttnError } from '../errors.js';
import { perplexityChartSpec, retrievalChartSpec, shorten, writeChart } from '../eval/charts.js';
import { accuracyByMethod, type PerplexityRow, type RetrievalRow } from '../eval/metrics.js';
import { Haystack, kvTask, niahTask, passkeyTask, PROMPT_LAYOUTS, type PromptLayout, type RetrievalTask } from '../eval/prompts.js';
import { type EvalDocument, type EvalTask, writeJsonAtomic } from '../eval/results.js';
import { type MethodTiming, type ModelLoader, runPerplexity, runRetrieval, type TextFile } from '../eval/run.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { loadModel } from '../runtime/load.js';
import { addAttentionOptions, attentionConfigFrom, intArg, intListArg } from './attention-options.js';
import { addModelOptions, deviceOptionsFrom, hubOptionsFrom } from './generate.js';
import { defaultModelPath, packageRoot } from './paths.js';
import { progressBar } from './progress.js';
import { formatTable } from './table.js';

/** The embedded default filler prose (public domain; see data/README.md). */
export function defaultHaystackPath(): string {
  return join(packageRoot(), 'data', 'northanger-abbey-ch1-7.txt');
}

/** A comma-separated list of numbers in [0, 1], e.g. "0,0.25,0.5". */
export function depthListArg(value: string): number[] {
  return value.split(',').map((v) => {
    const n = Number(v.trim());
    if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) throw new HipAttnError('INVALID_OPTION', `--depths takes numbers in [0, 1] (comma-separated), got "${v}"`);
    return n;
  });
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

async function readText(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new HipAttnError('INVALID_OPTION', `${what} ${file}: cannot read (${(e as Error).message})`, { cause: e });
  }
}

/** Options every eval command shares: model, attention list and options, outputs. */
function addCommonOptions(cmd: Command): Command {
  addModelOptions(cmd);
  addAttentionOptions(cmd, 'list');
  cmd.option('--json <file>', 'write the results as JSON (rewritten after every finished cell)');
  cmd.option('--chart <file>', 'draw the results to FILE.svg or FILE.png');
  cmd.option('--no-progress', 'no progress bar');
  return cmd;
}

function addRetrievalOptions(cmd: Command, defaults: { lengths: string; trials: number }): Command {
  return cmd
    .option('--lengths <tokens>', 'comma-separated context lengths (prompt + answer)', intListArg('--lengths'), intListArg('--lengths')(defaults.lengths))
    .option('--depths <fractions>', 'comma-separated needle depths in [0, 1]', depthListArg, [0, 0.25, 0.5, 0.75, 1])
    .option('--trials <n>', 'trials per (length, depth) cell', intArg('--trials'), defaults.trials)
    .option('--first-trial <n>', 'index of the first trial (rerun trial N of a run alone: --first-trial N --trials 1)', intArg('--first-trial'), 0)
    .option('--seed <n>', 'seed of the prompts (filler offsets, passkeys, keys)', intArg('--seed'), 1)
    .option('--last-token-decode', "feed the prompt's last token as a decoding step (HiP: its mask is estimated for that query alone, not shared with its query block)")
    .addOption(new Option('--format <layout>', 'prompt layout: plain (BOS + prose, as hip-testbed was trained) or landmark (task line + filler sentences, chat template)').choices([...PROMPT_LAYOUTS]).default('plain'));
}

interface CommonOpts {
  [flag: string]: unknown;
  model?: string;
  device: 'auto' | 'cpu' | 'webgpu';
  contextLength?: number;
  attention: AttentionMethod[];
  json?: string;
  chart?: string;
  progress: boolean;
}

function checkOutputs(o: CommonOpts): void {
  if (o.chart !== undefined && !/\.(svg|png)$/i.test(o.chart)) throw new HipAttnError('INVALID_OPTION', `--chart must end in .svg or .png, got "${o.chart}"`);
  if (o.attention.length === 0) throw new HipAttnError('INVALID_OPTION', '--attention lists no method');
  if (new Set(o.attention).size !== o.attention.length) throw new HipAttnError('INVALID_OPTION', `--attention lists a method twice: ${o.attention.join(',')}`);
}

/** Shared machinery of a run: loader with a loading bar, progress bar, JSON document, SIGINT. */
export class EvalSession<Row> {
  readonly doc: EvalDocument<Row>;
  readonly controller = new AbortController();
  private bar: ReturnType<typeof progressBar> | undefined;
  private readonly showProgress: boolean;
  private sigint?: () => void;
  readonly modelPath: string;

  constructor(
    task: EvalTask,
    private readonly opts: CommonOpts,
    options: Record<string, unknown>,
  ) {
    this.modelPath = opts.model ?? defaultModelPath();
    this.showProgress = opts.progress !== false;
    const attention = Object.fromEntries(
      opts.attention.map((m) => {
        const c = resolveAttentionConfig(attentionConfigFrom(opts, m));
        return [m, m === 'dense' ? {} : m === 'hip' ? c.hip : c.streaming];
      }),
    );
    this.doc = {
      task,
      model: this.modelPath,
      options: { ...options, attention: opts.attention, attentionOptions: attention, requestedDevice: opts.device, ...(opts.lastTokenDecode ? { lastTokenDecode: true } : {}) },
      date: new Date().toISOString(),
      device: '',
      rows: [],
      timings: [],
      incomplete: true,
    };
  }

  /** Installs the SIGINT handler: the first ^C stops after the current step, a second one exits. */
  start(): void {
    this.sigint = () => {
      if (this.controller.signal.aborted) process.exit(130);
      this.bar?.stop();
      this.bar = undefined;
      console.error('\ninterrupted: stopping after the current step (finished cells are kept; ^C again to quit now)');
      this.controller.abort();
    };
    process.on('SIGINT', this.sigint);
  }

  stop(): void {
    if (this.sigint) process.off('SIGINT', this.sigint);
    this.bar?.stop();
    this.bar = undefined;
  }

  loader(): ModelLoader {
    return async (method, needed) => {
      const ctx = this.opts.contextLength ?? needed;
      if (ctx < needed) throw new HipAttnError('INVALID_OPTION', `--context-length ${ctx} is shorter than the longest evaluated length (${needed})`);
      this.bar?.stop();
      const loading = this.showProgress ? progressBar(`loading (${method})`) : undefined;
      const model = await loadModel(this.modelPath, {
        ...deviceOptionsFrom(this.opts),
        attention: attentionConfigFrom(this.opts, method),
        contextLength: ctx,
        hub: hubOptionsFrom(this.opts),
        onProgress: (e) => loading?.update(e.total > 0 ? e.loaded / e.total : 1, e.item ?? e.stage),
      });
      loading?.stop();
      if (!this.doc.device) this.doc.device = model.backend.description;
      if (this.showProgress && !this.controller.signal.aborted) this.bar = progressBar('evaluating');
      return model;
    };
  }

  progress = (p: { fraction: number; label: string }): void => this.bar?.update(p.fraction, p.label);

  async save(rows: readonly Row[], timings?: MethodTiming[], extra?: Partial<EvalDocument<Row>>): Promise<void> {
    this.doc.rows = [...rows];
    if (timings) this.doc.timings = timings;
    Object.assign(this.doc, extra);
    if (this.opts.json) await writeJsonAtomic(this.opts.json, this.doc);
  }
}

function timingTable(timings: readonly MethodTiming[]): string {
  return formatTable(
    ['attention', 'time (s)', 'tokens', 'tokens/s'],
    timings.map((t) => [t.attention, t.seconds.toFixed(1), t.tokens, t.seconds > 0 ? (t.tokens / t.seconds).toFixed(0) : '-']),
  );
}

/** Perplexity table: one row per (file, context), one ppl column per method, HiP/Streaming vs dense in %. */
export function perplexityTable(rows: readonly PerplexityRow[], methods: readonly string[]): string {
  const keys = [...new Set(rows.map((r) => `${r.file}\u0000${r.context}`))];
  const find = (k: string, m: string) => rows.find((r) => `${r.file}\u0000${r.context}` === k && r.attention === m);
  const others = methods.includes('dense') ? methods.filter((m) => m !== 'dense') : [];
  return formatTable(
    ['file', 'context', 'tokens', ...methods.map((m) => `ppl ${m}`), ...others.map((m) => `${m} vs dense`)],
    keys.map((k) => {
      const [file, context] = k.split('\u0000');
      const any = rows.find((r) => `${r.file}\u0000${r.context}` === k)!;
      const dense = find(k, 'dense');
      return [
        file!,
        context!,
        any.tokens,
        ...methods.map((m) => find(k, m)?.ppl.toFixed(3) ?? '-'),
        ...others.map((m) => {
          const r = find(k, m);
          return r && dense ? `${((r.ppl / dense.ppl - 1) * 100).toFixed(2)} %` : '-';
        }),
      ];
    }),
  );
}

/** Retrieval table: one row per (length, depth), accuracy per method; then a mean row per length. */
export function retrievalTable(rows: readonly RetrievalRow[], methods: readonly string[]): string {
  const lengths = [...new Set(rows.map((r) => r.length))].sort((a, b) => a - b);
  const depths = [...new Set(rows.map((r) => r.depth))].sort((a, b) => a - b);
  const pct = (c: number, t: number) => (t > 0 ? `${((100 * c) / t).toFixed(0)} %` : '-');
  const body: string[][] = [];
  for (const length of lengths) {
    for (const depth of depths) {
      const cells = methods.map((m) => rows.find((r) => r.length === length && r.depth === depth && r.attention === m));
      if (cells.every((c) => !c)) continue;
      body.push([String(length), `${+(depth * 100).toFixed(1)} %`, ...cells.map((c) => (c ? `${pct(c.correct, c.trials)} (${c.correct}/${c.trials})` : '-'))]);
    }
    const mean = methods.map((m) => {
      const mine = rows.filter((r) => r.length === length && r.attention === m);
      const t = mine.reduce((s, r) => s + r.trials, 0);
      return t > 0 ? pct(mine.reduce((s, r) => s + r.correct, 0), t) : '-';
    });
    body.push([String(length), 'mean', ...mean]);
  }
  return formatTable(['length', 'depth', ...methods], body);
}

/** Accuracy, time and keys read per method (keys: see keysPerQuery, at the longest length run). */
function summaryTable(rows: readonly RetrievalRow[], timings: readonly MethodTiming[], opts: CommonOpts): string {
  const acc = accuracyByMethod(rows);
  const longest = Math.max(0, ...rows.map((r) => r.length));
  return formatTable(
    ['attention', 'accuracy', 'correct/trials', 'time (s)', 'tokens/s', `keys/query at ${longest}`],
    timings.map((t) => {
      const a = acc.get(t.attention);
      return [
        t.attention,
        a ? `${(100 * a.accuracy).toFixed(1)} %` : '-',
        a ? `${a.correct}/${a.trials}` : '-',
        t.seconds.toFixed(1),
        t.seconds > 0 ? (t.tokens / t.seconds).toFixed(0) : '-',
        keysPerQuery(resolveAttentionConfig(attentionConfigFrom(opts, t.attention)), longest),
      ];
    }),
  );
}

export interface RetrievalCommandSpec {
  task: 'passkey' | 'kv' | 'niah' | 'demo';
  chartTask: string;
  opts: CommonOpts;
  options: Record<string, unknown>;
  makeTask: (tokenizer: TextTokenizer) => RetrievalTask;
  lengths: number[];
  depths: number[];
  trials: number;
}

/** Runs a retrieval task end to end: progress, JSON after each cell, tables, chart. */
export async function runRetrievalCommand(s: RetrievalCommandSpec): Promise<{ rows: RetrievalRow[]; timings: MethodTiming[]; interrupted: boolean }> {
  checkOutputs(s.opts);
  const firstTrial = s.opts.firstTrial as number | undefined; // --first-trial (every retrieval command)
  const session = new EvalSession<RetrievalRow>(s.task, s.opts, { ...s.options, firstTrial });
  const methods = s.opts.attention;
  console.error(
    `${s.chartTask}: ${basename(session.modelPath)}, attention ${methods.join(', ')}, lengths ${s.lengths.join(',')}, depths ${s.depths.join(',')}, ${s.trials} trial${s.trials === 1 ? '' : 's'} per cell`,
  );
  session.start();
  let result;
  try {
    result = await runRetrieval(
      s.makeTask,
      { methods, lengths: s.lengths, depths: s.depths, trials: s.trials, firstTrial, lastTokenAsDecode: s.opts.lastTokenDecode === true },
      session.loader(),
      {
        signal: session.controller.signal,
        onProgress: session.progress,
        onCell: (_row, rows, timings) => session.save(rows, [...timings]),
      },
    );
  } finally {
    session.stop();
  }
  await session.save(result.rows, result.timings, { incomplete: result.interrupted, outputs: result.outputs });
  console.log(`\n${s.chartTask} accuracy (${session.doc.device}):\n`);
  console.log(retrievalTable(result.rows, methods));
  console.log('');
  console.log(summaryTable(result.rows, result.timings, s.opts));
  if (result.interrupted) console.log(`\ninterrupted: ${result.rows.length} finished cell${result.rows.length === 1 ? '' : 's'} kept`);
  if (s.opts.chart && result.rows.length > 0) {
    const longest = Math.max(...result.rows.map((r) => r.length));
    const notes = Object.fromEntries(
      result.timings.map((t) => [t.attention, `${t.seconds.toFixed(1)} s · ${keysPerQuery(resolveAttentionConfig(attentionConfigFrom(s.opts, t.attention)), longest)} keys/query at ${longest}`]),
    );
    await writeChart(retrievalChartSpec(result.rows, { task: s.chartTask, subtitle: chartSubtitle(result.rows, session.modelPath, session.doc.device), methodNotes: notes }), s.opts.chart);
    console.error(`chart: ${s.opts.chart}`);
  }
  if (s.opts.json) console.error(`results: ${s.opts.json}`);
  return result;
}

/**
 * Keys the last query of a `length`-token prompt reads in a layer of this method: every key for
 * dense; sink + top-k + window for HiP (its dense first layers read them all); sink + window for
 * StreamingLLM; never more than the prompt.
 */
export function keysPerQuery(config: ResolvedAttentionConfig, length: number): number {
  if (config.method === 'hip') return Math.min(length, config.hip.sinkTokens + config.hip.topK + config.hip.slidingWindow);
  if (config.method === 'streaming') return Math.min(length, config.streaming.sinkTokens + config.streaming.slidingWindow);
  return length;
}

/** The chart's subtitle lines: model and device, then what a cell is. */
function chartSubtitle(rows: readonly RetrievalRow[], model: string, device: string): string[] {
  const counts = [...new Set(rows.map((r) => r.trials))];
  const trials = counts.length === 1 && counts[0] === 1 ? '1 trial' : `${counts.join('/')} trials`;
  return [`${basename(model)} on ${shorten(device)}`, `${trials} per cell; depth 0% = start of the context, 100% = just before the question`];
}

export function registerEval(program: Command): void {
  const evalCmd = program.command('eval').description('long-context evaluation: perplexity, passkey, key–value retrieval, needle-in-a-haystack, HiP mask recall');

  // ---- ppl ----
  const ppl = evalCmd
    .command('ppl')
    .description('perplexity over non-overlapping windows of text files (BOS + window, every token scored), per context length and attention method')
    .option('--file <file>', 'a text file (repeat for several)', collect)
    .option('--context <tokens>', 'comma-separated window lengths', intListArg('--context'), [1024, 2048, 4096, 8192])
    .option('--max-windows <n>', 'at most this many windows per file and context, from the file start', intArg('--max-windows'), 64);
  addCommonOptions(ppl);
  ppl.action(async (opts: CommonOpts & { file?: string[]; context: number[]; maxWindows: number }) => {
    checkOutputs(opts);
    if (!opts.file || opts.file.length === 0) throw new HipAttnError('INVALID_OPTION', 'give at least one --file');
    const files: TextFile[] = await Promise.all(opts.file.map(async (f) => ({ name: basename(f), text: await readText(f, '--file') })));
    const session = new EvalSession<PerplexityRow>('ppl', opts, { files: opts.file, contexts: opts.context, maxWindows: opts.maxWindows });
    console.error(`perplexity: ${basename(session.modelPath)}, attention ${opts.attention.join(', ')}, contexts ${opts.context.join(',')}, at most ${opts.maxWindows} windows per file and context`);
    session.start();
    let result;
    try {
      result = await runPerplexity(files, { methods: opts.attention, contexts: opts.context, maxWindows: opts.maxWindows }, session.loader(), {
        signal: session.controller.signal,
        onProgress: session.progress,
        onCell: (_r, rows, timings) => session.save(rows, [...timings]),
      });
    } finally {
      session.stop();
    }
    await session.save(result.rows, result.timings, { incomplete: result.interrupted });
    for (const f of files) {
      const missing = opts.context.filter((c) => !result.rows.some((r) => r.file === f.name && r.context === c));
      if (missing.length > 0 && !result.interrupted) console.error(`note: ${f.name} is shorter than ${missing.join(', ')} tokens: no window at that context`);
    }
    console.log(`\nperplexity (${session.doc.device}):\n`);
    console.log(perplexityTable(result.rows, opts.attention));
    console.log('');
    console.log(timingTable(result.timings));
    if (result.interrupted) console.log(`\ninterrupted: ${result.rows.length} finished cell${result.rows.length === 1 ? '' : 's'} kept`);
    if (opts.chart && result.rows.length > 0) {
      await writeChart(perplexityChartSpec(result.rows, { subtitle: `${basename(session.modelPath)} on ${shorten(session.doc.device)}; lower is better; non-overlapping windows, every token scored` }), opts.chart);
      console.error(`chart: ${opts.chart}`);
    }
    if (opts.json) console.error(`results: ${opts.json}`);
    if (result.interrupted) process.exitCode = 130;
  });

  // ---- passkey ----
  const passkey = evalCmd
    .command('passkey')
    .description('passkey retrieval: "The pass key is NNNNN. Remember it. NNNNN is the pass key." at each depth of filler prose, then the question')
    .option('--haystack <file>', 'filler prose for the plain layout (default: the embedded Northanger Abbey excerpt)');
  addRetrievalOptions(passkey, { lengths: '2048,4096,8192', trials: 10 });
  addCommonOptions(passkey);
  passkey.action(async (opts: CommonOpts & { haystack?: string; lengths: number[]; depths: number[]; trials: number; seed: number; format: PromptLayout }) => {
    if (opts.format === 'landmark' && opts.haystack) console.error('note: the landmark layout uses its standard filler sentences; --haystack is not used');
    const text = opts.format === 'plain' ? await readText(opts.haystack ?? defaultHaystackPath(), '--haystack') : '';
    const r = await runRetrievalCommand({
      task: 'passkey',
      chartTask: 'passkey',
      opts: opts,
      options: { lengths: opts.lengths, depths: opts.depths, trials: opts.trials, seed: opts.seed, format: opts.format, haystack: opts.format === 'plain' ? (opts.haystack ?? defaultHaystackPath()) : undefined },
      makeTask: (tokenizer) => passkeyTask({ tokenizer, layout: opts.format, seed: opts.seed, haystack: opts.format === 'plain' ? new Haystack(tokenizer, text, basename(opts.haystack ?? defaultHaystackPath())) : undefined }),
      lengths: opts.lengths,
      depths: opts.depths,
      trials: opts.trials,
    });
    if (r.interrupted) process.exitCode = 130;
  });

  // ---- kv ----
  const kv = evalCmd
    .command('kv')
    .description('RULER-style key–value retrieval: many "key K: value V" lines (8 hex digits), then a query for the key at each depth');
  addRetrievalOptions(kv, { lengths: '2048,4096,8192', trials: 10 });
  addCommonOptions(kv);
  kv.action(async (opts: CommonOpts & { lengths: number[]; depths: number[]; trials: number; seed: number; format: PromptLayout }) => {
    const r = await runRetrievalCommand({
      task: 'kv',
      chartTask: 'key–value retrieval',
      opts: opts,
      options: { lengths: opts.lengths, depths: opts.depths, trials: opts.trials, seed: opts.seed, format: opts.format },
      makeTask: (tokenizer) => kvTask({ tokenizer, layout: opts.format, seed: opts.seed }),
      lengths: opts.lengths,
      depths: opts.depths,
      trials: opts.trials,
    });
    if (r.interrupted) process.exitCode = 130;
  });

  // ---- niah ----
  const niah = evalCmd
    .command('niah')
    .description('needle-in-a-haystack: a needle sentence at each depth of filler prose, then a question; correct when the output contains the answer')
    .requiredOption('--needle <text>', 'the sentence hidden in the prose')
    .requiredOption('--question <text>', 'the question asked after the prose')
    .requiredOption('--answer <text>', 'expected answer (case-insensitive substring of the output)')
    .option('--haystack <file>', 'filler prose (default: the embedded Northanger Abbey excerpt)')
    .option('--max-new-tokens <n>', 'greedy tokens generated per trial', intArg('--max-new-tokens'), 32);
  addRetrievalOptions(niah, { lengths: '2048,4096,8192', trials: 5 });
  addCommonOptions(niah);
  niah.action(
    async (opts: CommonOpts & { needle: string; question: string; answer: string; haystack?: string; maxNewTokens: number; lengths: number[]; depths: number[]; trials: number; seed: number; format: PromptLayout }) => {
      const path = opts.haystack ?? defaultHaystackPath();
      const text = await readText(path, '--haystack');
      if (opts.maxNewTokens < 1) throw new HipAttnError('INVALID_OPTION', '--max-new-tokens must be ≥ 1');
      const r = await runRetrievalCommand({
        task: 'niah',
        chartTask: 'needle-in-a-haystack',
        opts: opts,
        options: {
          lengths: opts.lengths,
          depths: opts.depths,
          trials: opts.trials,
          seed: opts.seed,
          format: opts.format,
          haystack: path,
          needle: opts.needle,
          question: opts.question,
          answer: opts.answer,
          maxNewTokens: opts.maxNewTokens,
        },
        makeTask: (tokenizer) =>
          niahTask({ tokenizer, layout: opts.format, seed: opts.seed, haystack: new Haystack(tokenizer, text, basename(path)), needle: opts.needle, question: opts.question, answer: opts.answer, maxNewTokens: opts.maxNewTokens }),
        lengths: opts.lengths,
        depths: opts.depths,
        trials: opts.trials,
      });
      if (r.interrupted) process.exitCode = 130;
    },
  );

  // ---- recall ----
  const recall = evalCmd
    .command('recall')
    .description('HiP diagnostics on the model\'s real q/k (CPU): per layer and head, mask recall vs the exact top-k, attention mass covered by HiP / exact top-k / StreamingLLM, and whether the last query reads the passkey')
    .option('--length <tokens>', 'prompt length', intArg('--length'), 4096)
    .option('--depth <fraction>', 'passkey depth in [0, 1]', (v: string) => depthListArg(v)[0]!, 0.5)
    .option('--seed <n>', 'seed of the prompt', intArg('--seed'), 1)
    .option('--haystack <file>', 'filler prose of the passkey prompt (default: the embedded Northanger Abbey excerpt)')
    .option('--file <file>', 'measure on the first tokens of this text file (BOS + text) instead of a passkey prompt')
    .addOption(new Option('--propagate <method>', 'activations: dense in every layer, or HiP after --dense-layers as the runtime').choices(['dense', 'hip']).default('dense'))
    .option('--json <file>', 'write the rows as JSON')
    .option('--no-progress', 'no progress bar');
  addModelOptions(recall);
  addAttentionOptions(recall, false);
  recall.action(async (opts: Record<string, unknown> & { length: number; depth: number; seed: number; haystack?: string; file?: string; propagate: 'dense' | 'hip'; model?: string; json?: string; progress: boolean }) => {
    const { openModelString } = await import('../runtime/hub.js');
    const { maskRecallProfile } = await import('../eval/recall.js');
    const modelPath = opts.model ?? defaultModelPath();
    const opened = await openModelString(modelPath, hubOptionsFrom(opts));
    try {
      const cfg = resolveAttentionConfig(attentionConfigFrom(opts, 'hip'));
      const tok = opened.tokenizer;
      let ids: number[];
      let needle: [number, number] | undefined;
      if (opts.file) {
        const bos = tok.bosTokenId !== undefined ? [tok.bosTokenId] : [];
        ids = [...bos, ...tok.encode(await readText(opts.file, '--file'), { addBos: false })].slice(0, opts.length);
        if (ids.length < opts.length) console.error(`note: ${opts.file} has only ${ids.length} tokens`);
      } else {
        const path = opts.haystack ?? defaultHaystackPath();
        const task = passkeyTask({ tokenizer: tok, layout: 'plain', seed: opts.seed, haystack: new Haystack(tok, await readText(path, '--haystack'), basename(path)) });
        const p = task.build(opts.length, opts.depth, 0);
        ids = p.ids;
        needle = p.needle;
      }
      console.error(`recall: ${basename(modelPath)}, ${ids.length} tokens${needle ? `, passkey at depth ${opts.depth} (tokens ${needle[0]}–${needle[1] - 1})` : ''}, activations ${opts.propagate}`);
      const bar = opts.progress !== false ? progressBar('measuring') : undefined;
      const t0 = performance.now();
      const rows = await maskRecallProfile(opened, ids, { hip: cfg.hip, streaming: cfg.streaming, needle, propagate: opts.propagate, onProgress: (f, l) => bar?.update(f, l) });
      bar?.stop();
      const seconds = (performance.now() - t0) / 1000;
      const pct = (x: number | undefined) => (x === undefined ? '-' : `${(100 * x).toFixed(1)} %`);
      const headers = ['layer', 'head', 'runtime', 'query blocks', 'mask recall', 'mass HiP', 'mass top-k', 'mass streaming', 'last q: HiP', 'top-k', 'streaming'];
      if (needle) headers.push('last q mass on needle', 'needle read: HiP', 'top-k', 'streaming');
      console.log(`\nHiP mask recall and attention-mass coverage (${ids.length} tokens, topK ${cfg.hip.topK}, blockSizeQ ${cfg.hip.blockSizeQ}, blockSizeK ${cfg.hip.blockSizeK}, window ${cfg.hip.slidingWindow}; ${seconds.toFixed(1)} s):\n`);
      console.log(
        formatTable(
          headers,
          rows.map((r) => {
            const base = [r.layer, r.head, r.runtime, r.queryBlocks, pct(r.recall), pct(r.massHip), pct(r.massTopK), pct(r.massStreaming), pct(r.lastMassHip), pct(r.lastMassTopK), pct(r.lastMassStreaming)];
            return needle ? [...base, pct(r.needleMass), pct(r.needleHip), pct(r.needleTopK), pct(r.needleStreaming)] : base;
          }),
        ),
      );
      console.log(
        '\nmask recall: share of the exact top-k key blocks (same block score, brute force) that the tree search selects, over query blocks with more candidates than slots.\n' +
          "mass X: share of the dense attention mass of each query block's last query that falls on the keys X reads (mean over blocks); last q: the same for the prompt's last query, the one that predicts the answer.\n" +
          (needle ? "needle read: share of the needle's tokens that the prompt's last query reads under each method.\n" : ''),
      );
      if (opts.json) {
        await writeJsonAtomic(opts.json, {
          task: 'recall',
          model: modelPath,
          options: { length: ids.length, depth: opts.file ? undefined : opts.depth, seed: opts.seed, file: opts.file, haystack: opts.file ? undefined : (opts.haystack ?? defaultHaystackPath()), propagate: opts.propagate, hip: cfg.hip, streaming: cfg.streaming, needle },
          date: new Date().toISOString(),
          device: 'CPU (float32, JavaScript)',
          seconds,
          rows,
        });
        console.error(`results: ${opts.json}`);
      }
    } finally {
      await opened.store.close();
    }
  });
}
