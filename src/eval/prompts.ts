/**
 * Prompts of the retrieval evaluations (passkey, key–value, needle-in-a-haystack), built as
 * token ids so their length is exact. Every prompt is a pure function of (seed, length, depth,
 * trial): the same trial gives every attention method the same prompt, and a run can be
 * reproduced from its seed. The filler of a trial (its haystack window, its passkey, its
 * key–value list) depends on (seed, length, trial) only, so across depths of one trial only the
 * needle moves.
 *
 * Layouts:
 * - `plain` (what hip-testbed-* was trained on, its model card's evaluation): BOS + filler
 *   tokens (a window of the haystack's tokens at a random offset) with the needle's tokens
 *   inserted at the depth + the question's tokens; total L − (maxNewTokens + 1) tokens.
 * - `landmark` (the Landmark-Attention passkey test, for instruction-tuned models): a task line,
 *   the standard filler sentences repeated, the needle line at the depth, the question; through
 *   the model's chat template when it has one.
 */
import { HipAttnError } from '../errors.js';
import { encodeChat, renderChat } from '../model/chat-template.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { Rng } from '../util/rng.js';
import { insertionIndex } from './metrics.js';

export type PromptLayout = 'plain' | 'landmark';
export const PROMPT_LAYOUTS: readonly PromptLayout[] = ['plain', 'landmark'];

/** What a prompt's answer is checked with: the first number of the output, or a substring. */
export type AnswerCheck = 'first-number' | 'substring';

export interface RetrievalPrompt {
  ids: number[];
  /** The expected answer (passkey digits, value, answer text). */
  answer: string;
  check: AnswerCheck;
  /** Greedy tokens to decode after the prompt. */
  maxNewTokens: number;
  /** Token positions [start, end) of the needle in `ids` (for attention diagnostics). */
  needle: [number, number];
}

/** A prompt builder: one prompt per (length, depth, trial). */
export interface RetrievalTask {
  name: string;
  build(length: number, depth: number, trial: number): RetrievalPrompt;
}

/** A 32-bit seed mixed from several integers (order matters), for per-trial generators. */
export function mixSeed(...parts: number[]): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    let x = Math.round(p * 1e6) | 0; // depths are fractions: keep 6 digits
    x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
    x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
    x ^= x >>> 16;
    h = Math.imul(h ^ x, 0x01000193);
    h ^= h >>> 15;
  }
  return h >>> 0;
}

/** The tokens of a text used as filler prose, cycled when a window is longer than the text. */
export class Haystack {
  readonly tokens: number[];
  constructor(
    readonly tokenizer: TextTokenizer,
    text: string,
    readonly name = 'haystack',
  ) {
    if (text.trim().length === 0) throw new HipAttnError('INVALID_OPTION', `${name}: the haystack text is empty`);
    this.tokens = tokenizer.encode(text, { addBos: false });
    if (this.tokens.length < 16) throw new HipAttnError('INVALID_OPTION', `${name}: the haystack text is too short (${this.tokens.length} tokens)`);
  }

  /** `count` tokens starting at a random offset (drawn from `rng`), wrapping around the text. */
  window(rng: Rng, count: number): number[] {
    const n = this.tokens.length;
    const start = count >= n ? 0 : rng.int(n - count + 1);
    const out = new Array<number>(count);
    for (let i = 0; i < count; i++) out[i] = this.tokens[(start + i) % n]!;
    return out;
  }
}

function bosOf(tokenizer: TextTokenizer): number[] {
  return tokenizer.bosTokenId !== undefined ? [tokenizer.bosTokenId] : [];
}

const raw = (tokenizer: TextTokenizer, text: string) => tokenizer.encode(text, { addBos: false });

/**
 * Plain layout: BOS + filler with `needle` at `depth` + `question`, exactly `total` tokens.
 * `snap` moves the needle back to the start of a sentence (at most 128 tokens back).
 */
export function plainPrompt(
  tokenizer: TextTokenizer,
  haystack: Haystack,
  rng: Rng,
  total: number,
  depth: number,
  needleText: string,
  questionText: string,
  snap = false,
): { ids: number[]; needle: [number, number] } {
  const bos = bosOf(tokenizer);
  const needle = raw(tokenizer, needleText);
  const question = raw(tokenizer, questionText);
  const fillerLength = total - bos.length - needle.length - question.length;
  if (fillerLength < 1) {
    throw new HipAttnError('INVALID_OPTION', `a ${total}-token prompt has no room for filler (needle ${needle.length} + question ${question.length} tokens)`);
  }
  const filler = haystack.window(rng, fillerLength);
  let at = insertionIndex(fillerLength, depth);
  if (snap) at = sentenceStart(tokenizer, filler, at);
  const ids = [...bos, ...filler.slice(0, at), ...needle, ...filler.slice(at), ...question];
  const start = bos.length + at;
  return { ids, needle: [start, start + needle.length] };
}

/** The nearest index ≤ at (within 128 tokens) that follows a sentence end or a line break. */
export function sentenceStart(tokenizer: TextTokenizer, tokens: readonly number[], at: number): number {
  if (at <= 0 || at >= tokens.length) return at;
  for (let i = at; i > Math.max(0, at - 128); i--) {
    const prev = tokenizer.decode([tokens[i - 1]!]);
    if (/[.!?]["')\]]?\s*$|\n\s*$/.test(prev)) return i;
  }
  return at;
}

/** The five sentences of the Landmark-Attention passkey test's filler. */
export const LANDMARK_FILLER = 'The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.';
export const LANDMARK_TASK = 'There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there.';

/** Encodes `text` as a user turn through the chat template, or as text (with BOS) without one. */
function encodeInstruction(tokenizer: TextTokenizer, text: string): number[] {
  if (tokenizer.chatTemplate) return encodeChat(tokenizer, [{ role: 'user', content: text }], { addGenerationPrompt: true });
  return tokenizer.encode(text);
}

/**
 * Landmark layout: `head` + "\n" + sentences with `needleText` as its own line at `depth` +
 * "\n" + `tail`, the filler sentences repeated so the whole prompt is at most `total` tokens
 * (the chat template included) and as long as possible. `sentences` are cycled.
 */
export function landmarkPrompt(
  tokenizer: TextTokenizer,
  total: number,
  depth: number,
  head: string,
  needleText: string,
  tail: string,
  sentences: readonly string[] = LANDMARK_FILLER.split(/(?<=\.) /),
): { ids: number[]; needle: [number, number] } {
  const build = (n: number) => {
    const fill = Array.from({ length: n }, (_, i) => sentences[i % sentences.length]!);
    const at = insertionIndex(n, depth);
    const before = `${head}\n${fill.slice(0, at).join(' ')}`;
    const text = `${before}\n${needleText}\n${fill.slice(at).join(' ')}\n${tail}`;
    return { text, ids: encodeInstruction(tokenizer, text), before };
  };
  const base = build(0).ids.length;
  if (base > total) throw new HipAttnError('INVALID_OPTION', `a ${total}-token prompt is too short for the landmark layout (${base} tokens without filler)`);
  const perSentence = Math.max(1, (build(sentences.length * 4).ids.length - base) / (sentences.length * 4));
  let n = Math.max(0, Math.floor((total - base) / perSentence));
  let p = build(n);
  // Adjust: the estimate is close; step down while too long, then up while one more fits.
  while (p.ids.length > total && n > 0) {
    n = Math.max(0, n - Math.max(1, Math.ceil((p.ids.length - total) / perSentence)));
    p = build(n);
  }
  for (;;) {
    const q = build(n + 1);
    if (q.ids.length > total) break;
    n++;
    p = q;
  }
  // Locate the needle: the tokens of the text up to the needle line, then the needle's own.
  const start = Math.min(p.ids.length, instructionPrefixLength(tokenizer, p.before));
  const needleLen = raw(tokenizer, `\n${needleText}`).length;
  return { ids: p.ids, needle: [start, Math.min(p.ids.length, start + needleLen)] };
}

/**
 * Tokens of an instruction prompt before the point where its user text `before` ends (the
 * chat template's opening included). Exact up to a merge across the cut; for diagnostics.
 */
export function instructionPrefixLength(tokenizer: TextTokenizer, before: string): number {
  if (!tokenizer.chatTemplate) return tokenizer.encode(before).length;
  const mark = '\u0001HIPATTN-CUT\u0001';
  const rendered = renderChat(tokenizer, [{ role: 'user', content: mark }], { addGenerationPrompt: true });
  const open = rendered.slice(0, Math.max(0, rendered.indexOf(mark)));
  return raw(tokenizer, open + before).length;
}

/** A five-digit passkey 10000–99999. */
export function randomPasskey(rng: Rng): string {
  return String(10000 + rng.int(90000));
}

export const PASSKEY_QUESTION = 'What is the pass key? The pass key is';
export const passkeyNeedle = (key: string) => `The pass key is ${key}. Remember it. ${key} is the pass key.`;

export interface PasskeyTaskOptions {
  tokenizer: TextTokenizer;
  layout: PromptLayout;
  seed: number;
  /** Filler prose (plain layout). */
  haystack?: Haystack;
}

/** The passkey retrieval task (see the module comment for the layouts). */
export function passkeyTask(o: PasskeyTaskOptions): RetrievalTask {
  if (o.layout === 'plain' && !o.haystack) throw new HipAttnError('INVALID_OPTION', 'the plain passkey layout needs a haystack (filler prose)');
  return {
    name: 'passkey',
    build(length, depth, trial) {
      const rng = new Rng(mixSeed(o.seed, 1, length, trial));
      const key = randomPasskey(rng);
      if (o.layout === 'plain') {
        const maxNewTokens = 7;
        const p = plainPrompt(o.tokenizer, o.haystack!, rng, length - (maxNewTokens + 1), depth, ` ${passkeyNeedle(key)}`, `\n${PASSKEY_QUESTION}`);
        return { ...p, answer: key, check: 'first-number', maxNewTokens };
      }
      const maxNewTokens = 15;
      const p = landmarkPrompt(o.tokenizer, length - (maxNewTokens + 1), depth, LANDMARK_TASK, passkeyNeedle(key), PASSKEY_QUESTION);
      return { ...p, answer: key, check: 'first-number', maxNewTokens };
    },
  };
}

/** A key or value of the key–value task: 8 lowercase hex digits. */
function hex8(rng: Rng): string {
  return (rng.nextU32() >>> 0).toString(16).padStart(8, '0');
}

export const KV_INSTRUCTION = 'Extract the value corresponding to the specified key in the list below.';

export interface KvTaskOptions {
  tokenizer: TextTokenizer;
  layout: PromptLayout;
  seed: number;
}

/**
 * RULER-style key–value retrieval: many "key K: value V" lines (8 hex digits each, all keys
 * distinct), then a query for the key whose line sits at the depth. Plain layout (the testbed
 * model card's): BOS + lines + "\nQuery: key K -> value"; landmark layout: an instruction line,
 * the lines, "What is the value of key K? The value of key K is", through the chat template.
 * Correct when the output contains V.
 */
export function kvTask(o: KvTaskOptions): RetrievalTask {
  const { tokenizer } = o;
  return {
    name: 'kv',
    build(length, depth, trial) {
      const rng = new Rng(mixSeed(o.seed, 2, length, trial));
      const maxNewTokens = o.layout === 'plain' ? 12 : 24;
      const total = length - (maxNewTokens + 1);
      const pairs: [string, string][] = [];
      const seen = new Set<string>();
      const line = (k: string, v: string) => `key ${k}: value ${v}`;
      const make = (n: number, qi: number) => {
        const lines = pairs.slice(0, n).map(([k, v]) => line(k, v));
        const [qk] = pairs[qi]!;
        if (o.layout === 'plain') {
          const body = raw(tokenizer, lines.join('\n'));
          const ids = [...bosOf(tokenizer), ...body, ...raw(tokenizer, `\nQuery: key ${qk} -> value`)];
          return ids;
        }
        return encodeInstruction(tokenizer, `${KV_INSTRUCTION}\n\n${lines.join('\n')}\n\nWhat is the value of key ${qk}? The value of key ${qk} is`);
      };
      const addPair = () => {
        let k = hex8(rng);
        while (seen.has(k)) k = hex8(rng);
        seen.add(k);
        pairs.push([k, hex8(rng)]);
      };
      // Estimate tokens per line, then fill.
      for (let i = 0; i < 8; i++) addPair();
      const per = Math.max(1, (make(8, 0).length - make(1, 0).length) / 7);
      const base = make(1, 0).length - per;
      if (base + per > total) throw new HipAttnError('INVALID_OPTION', `a ${length}-token prompt is too short for the key–value task`);
      let n = Math.max(1, Math.floor((total - base) / per));
      while (pairs.length < n + 1) addPair();
      const qiOf = (count: number) => Math.min(count - 1, insertionIndex(count - 1, depth));
      let ids = make(n, qiOf(n));
      while (ids.length > total && n > 1) {
        n = Math.max(1, n - Math.max(1, Math.ceil((ids.length - total) / per)));
        ids = make(n, qiOf(n));
      }
      for (;;) {
        while (pairs.length < n + 2) addPair();
        const more = make(n + 1, qiOf(n + 1));
        if (more.length > total) break;
        n++;
        ids = more;
      }
      const qi = qiOf(n);
      const [, value] = pairs[qi]!;
      // Needle position: the tokens before the queried line.
      const before = pairs.slice(0, qi).map(([k, v]) => line(k, v)).join('\n');
      const start =
        o.layout === 'plain'
          ? bosOf(tokenizer).length + (qi > 0 ? raw(tokenizer, `${before}\n`).length : 0)
          : instructionPrefixLength(tokenizer, `${KV_INSTRUCTION}\n\n${qi > 0 ? `${before}\n` : ''}`);
      const len = raw(tokenizer, line(...pairs[qi]!)).length;
      return { ids, answer: value, check: 'substring', maxNewTokens, needle: [start, Math.min(ids.length, start + len)] };
    },
  };
}

export interface NiahTaskOptions {
  tokenizer: TextTokenizer;
  layout: PromptLayout;
  seed: number;
  haystack: Haystack;
  needle: string;
  question: string;
  answer: string;
  /** Greedy tokens to decode (default 32). */
  maxNewTokens?: number;
}

/**
 * Needle-in-a-haystack: a needle sentence placed at the depth of haystack prose (moved back to
 * the start of a sentence), then the question; correct when the output contains the answer
 * (case-insensitive). Plain layout: BOS + prose + "\n" + question. Landmark layout: the task
 * line, the prose, the question, through the chat template.
 */
export function niahTask(o: NiahTaskOptions): RetrievalTask {
  if (o.needle.trim() === '' || o.question.trim() === '' || o.answer.trim() === '') {
    throw new HipAttnError('INVALID_OPTION', 'needle-in-a-haystack needs a non-empty needle, question and answer');
  }
  const maxNewTokens = o.maxNewTokens ?? 32;
  return {
    name: 'niah',
    build(length, depth, trial) {
      const rng = new Rng(mixSeed(o.seed, 3, length, trial));
      const total = length - (maxNewTokens + 1);
      if (o.layout === 'plain') {
        const p = plainPrompt(o.tokenizer, o.haystack, rng, total, depth, ` ${o.needle.trim()}`, `\n${o.question.trim()}`, true);
        return { ...p, answer: o.answer, check: 'substring', maxNewTokens };
      }
      // Landmark layout with prose: the haystack window, cut at the depth (sentence start), in a chat turn.
      const head = `${LANDMARK_TASK}\n`;
      const overhead = encodeInstruction(o.tokenizer, `${head}\n${o.needle}\n\n${o.question}`).length;
      let fillerLength = total - overhead;
      if (fillerLength < 1) throw new HipAttnError('INVALID_OPTION', `a ${length}-token prompt has no room for filler`);
      const window = o.haystack.window(rng, fillerLength);
      for (let attempt = 0; attempt < 8; attempt++) {
        const filler = window.slice(0, fillerLength);
        const at = sentenceStart(o.tokenizer, filler, insertionIndex(filler.length, depth));
        const before = o.tokenizer.decode(filler.slice(0, at));
        const after = o.tokenizer.decode(filler.slice(at));
        const text = `${head}${before}\n${o.needle}\n${after}\n${o.question}`;
        const ids = encodeInstruction(o.tokenizer, text);
        if (ids.length <= total || fillerLength <= 1) {
          const start = instructionPrefixLength(o.tokenizer, `${head}${before}`);
          const len = raw(o.tokenizer, `\n${o.needle}`).length;
          return { ids, answer: o.answer, check: 'substring', maxNewTokens, needle: [start, Math.min(ids.length, start + len)] };
        }
        fillerLength -= ids.length - total;
      }
      throw new HipAttnError('INVALID_OPTION', `could not fit the needle-in-a-haystack prompt into ${total} tokens`);
    },
  };
}
