import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { openModelPath } from '../model/node-load.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { Rng } from '../util/rng.js';
import { Haystack, kvTask, LANDMARK_TASK, mixSeed, niahTask, passkeyNeedle, passkeyTask, plainPrompt, PASSKEY_QUESTION } from './prompts.js';

const root = join(import.meta.dirname, '..', '..');
const mini = join(root, 'models', 'hip-testbed-mini');
const prose = readFileSync(join(root, 'data', 'northanger-abbey-ch1-7.txt'), 'utf8');

let tok: TextTokenizer;
let hay: Haystack;
beforeAll(async () => {
  const opened = await openModelPath(mini);
  tok = opened.tokenizer;
  await opened.store.close();
  hay = new Haystack(tok, prose, 'northanger');
});

const raw = (s: string) => tok.encode(s, { addBos: false });

describe('passkey, plain layout (the testbed model card)', () => {
  it('matches the layout of the model card golden passkey prompt (300 tokens, depth 50%)', () => {
    const golden = JSON.parse(readFileSync(join(mini, 'golden.json'), 'utf8')) as { inputs: { name: string; input_ids: number[] }[] };
    const ids = golden.inputs.find((i) => i.name === 'passkey_300')!.input_ids;
    const needle = raw(' ' + passkeyNeedle('68413'));
    const question = raw('\n' + PASSKEY_QUESTION);
    const filler = ids.length - 1 - needle.length - question.length;
    const at = 1 + Math.round(0.5 * filler); // BOS + round(depth · filler)
    expect(ids[0]).toBe(tok.bosTokenId);
    expect(ids.slice(at, at + needle.length)).toEqual(needle);
    expect(ids.slice(-question.length)).toEqual(question);
    // our builder puts a needle of a 300-token prompt (L = 308) at the same place
    const p = passkeyTask({ tokenizer: tok, layout: 'plain', seed: 5, haystack: hay }).build(308, 0.5, 0);
    expect(p.ids).toHaveLength(300);
    expect(p.needle[0]).toBe(at);
  });

  it('L − 8 tokens, BOS first, question last, needle at the depth; only the needle moves across depths', () => {
    const task = passkeyTask({ tokenizer: tok, layout: 'plain', seed: 11, haystack: hay });
    const L = 1024;
    const byDepth = [0, 0.25, 0.5, 1].map((d) => task.build(L, d, 3));
    const question = raw('\n' + PASSKEY_QUESTION);
    for (const [i, p] of byDepth.entries()) {
      const d = [0, 0.25, 0.5, 1][i]!;
      expect(p.ids).toHaveLength(L - 8);
      expect(p.maxNewTokens).toBe(7);
      expect(p.check).toBe('first-number');
      expect(p.answer).toMatch(/^[1-9]\d{4}$/);
      expect(p.ids[0]).toBe(tok.bosTokenId);
      expect(p.ids.slice(-question.length)).toEqual(question);
      const needle = raw(' ' + passkeyNeedle(p.answer));
      expect(p.ids.slice(p.needle[0], p.needle[1])).toEqual(needle);
      const fillerLength = L - 8 - 1 - needle.length - question.length;
      expect(p.needle[0]).toBe(1 + Math.round(d * fillerLength));
      // filler = prompt without BOS, needle, question: the same for every depth of the trial
      const filler = [...p.ids.slice(1, p.needle[0]), ...p.ids.slice(p.needle[1], -question.length)];
      const first = byDepth[0]!;
      expect(filler).toEqual(first.ids.slice(first.needle[1], -question.length));
      expect(p.answer).toBe(first.answer);
    }
    // depth 0: right after BOS; depth 1: right before the question
    expect(byDepth[0]!.needle[0]).toBe(1);
    expect(byDepth[3]!.needle[1]).toBe(L - 8 - question.length);
  });

  it('is reproducible from the seed; trials and seeds differ', () => {
    const a = passkeyTask({ tokenizer: tok, layout: 'plain', seed: 7, haystack: hay });
    const b = passkeyTask({ tokenizer: tok, layout: 'plain', seed: 7, haystack: hay });
    const c = passkeyTask({ tokenizer: tok, layout: 'plain', seed: 8, haystack: hay });
    expect(a.build(512, 0.5, 0)).toEqual(b.build(512, 0.5, 0));
    expect(a.build(512, 0.5, 0).ids).not.toEqual(a.build(512, 0.5, 1).ids);
    expect(a.build(512, 0.5, 0).ids).not.toEqual(c.build(512, 0.5, 0).ids);
    expect(mixSeed(1, 2, 3)).not.toBe(mixSeed(1, 3, 2));
  });

  it('haystack windows wrap around a short text', () => {
    const small = new Haystack(tok, 'One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen.');
    const w = small.window(new Rng(1), small.tokens.length * 3 + 5);
    expect(w.slice(0, small.tokens.length)).toEqual(small.tokens);
    expect(w.slice(small.tokens.length, 2 * small.tokens.length)).toEqual(small.tokens);
    expect(() => new Haystack(tok, '   ')).toThrow(/empty/);
    expect(() => plainPrompt(tok, small, new Rng(1), 20, 0.5, ' ' + passkeyNeedle('12345'), '\n' + PASSKEY_QUESTION)).toThrow(/no room for filler/);
  });
});

describe('passkey, landmark layout', () => {
  it('task line, filler sentences, needle line at the depth, question; fits L − 16 tokens', () => {
    const task = passkeyTask({ tokenizer: tok, layout: 'landmark', seed: 3 });
    for (const d of [0, 0.5, 1]) {
      const p = task.build(1024, d, 0);
      expect(p.ids.length).toBeLessThanOrEqual(1024 - 16);
      expect(p.ids.length).toBeGreaterThan(1024 - 16 - 30);
      const text = tok.decode(p.ids, { skipSpecialTokens: true });
      expect(text.startsWith(LANDMARK_TASK + '\n')).toBe(true);
      expect(text).toContain('The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.');
      expect(text).toContain(`\n${passkeyNeedle(p.answer)}\n`);
      expect(text.endsWith(`\n${PASSKEY_QUESTION}`)).toBe(true);
      expect(tok.decode(p.ids.slice(p.needle[0], p.needle[1]))).toContain(`pass key is ${p.answer}`);
      const before = text.indexOf(passkeyNeedle(p.answer)) / text.length;
      expect(Math.abs(before - d)).toBeLessThan(0.1);
    }
  });
});

describe('instruction layouts through a chat template', () => {
  it('landmark passkey and kv prompts are one user turn + the generation prompt; needle ranges point at the needle', () => {
    const template =
      '{{ bos_token }}{% for m in messages %}<|user|>\n{{ m.content }}<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}';
    const chat = Object.create(tok, { chatTemplate: { value: template } }) as TextTokenizer;
    const p = passkeyTask({ tokenizer: chat, layout: 'landmark', seed: 4 }).build(1024, 0.5, 1);
    expect(p.ids.length).toBeLessThanOrEqual(1024 - 16);
    const text = tok.decode(p.ids);
    expect(text.startsWith(`<|begin_of_text|><|user|>\n${LANDMARK_TASK}\n`)).toBe(true);
    expect(text.endsWith(`${PASSKEY_QUESTION}<|end|>\n<|assistant|>\n`)).toBe(true);
    expect(tok.decode(p.ids.slice(p.needle[0], p.needle[1]))).toContain(`The pass key is ${p.answer}.`);
    const kv = kvTask({ tokenizer: chat, layout: 'landmark', seed: 4 }).build(1024, 0.5, 0);
    const kvText = tok.decode(kv.ids);
    expect(kvText).toMatch(/What is the value of key ([0-9a-f]{8})\? The value of key \1 is<\|end\|>\n<\|assistant\|>\n$/);
    const key = /What is the value of key ([0-9a-f]{8})/.exec(kvText)![1]!;
    expect(tok.decode(kv.ids.slice(kv.needle[0], kv.needle[1]))).toContain(`key ${key}: value ${kv.answer}`);
  });
});

describe('key–value retrieval', () => {
  it('distinct 8-hex keys, the queried key at the depth, answer = its value', () => {
    const task = kvTask({ tokenizer: tok, layout: 'plain', seed: 1 });
    for (const d of [0, 0.5, 1]) {
      const p = task.build(1024, d, 0);
      expect(p.ids.length).toBeLessThanOrEqual(1024 - 13);
      expect(p.ids.length).toBeGreaterThan(1024 - 13 - 40);
      const text = tok.decode(p.ids, { skipSpecialTokens: true });
      const lines = text.split('\n');
      const query = /^Query: key ([0-9a-f]{8}) -> value$/.exec(lines.at(-1)!);
      expect(query).not.toBeNull();
      const pairs = lines.slice(0, -1).map((l) => /^key ([0-9a-f]{8}): value ([0-9a-f]{8})$/.exec(l)!);
      expect(pairs.every(Boolean)).toBe(true);
      expect(new Set(pairs.map((m) => m[1])).size).toBe(pairs.length);
      const qi = pairs.findIndex((m) => m[1] === query![1]);
      expect(pairs[qi]![2]).toBe(p.answer);
      expect(Math.abs(qi / (pairs.length - 1) - d)).toBeLessThan(0.05);
      expect(tok.decode(p.ids.slice(p.needle[0], p.needle[1]))).toContain(query![1]);
    }
  });
});

describe('needle in a haystack', () => {
  it('needle at a sentence start near the depth, question last, substring check', () => {
    const task = niahTask({
      tokenizer: tok,
      layout: 'plain',
      seed: 2,
      haystack: hay,
      needle: 'The best thing to do in San Francisco is eat a sandwich in Dolores Park.',
      question: 'What is the best thing to do in San Francisco?',
      answer: 'sandwich in Dolores Park',
    });
    const p = task.build(2048, 0.5, 0);
    expect(p.ids).toHaveLength(2048 - 33);
    expect(p.check).toBe('substring');
    const needle = tok.decode(p.ids.slice(p.needle[0], p.needle[1]));
    expect(needle).toBe(' The best thing to do in San Francisco is eat a sandwich in Dolores Park.');
    const before = tok.decode(p.ids.slice(1, p.needle[0]));
    expect(before).toMatch(/[.!?]["')\]]?\s*$|\n\s*$/);
    expect(p.needle[0] / p.ids.length).toBeGreaterThan(0.4);
    expect(p.needle[0] / p.ids.length).toBeLessThan(0.55);
    expect(tok.decode(p.ids).endsWith('\nWhat is the best thing to do in San Francisco?')).toBe(true);
    expect(() => niahTask({ tokenizer: tok, layout: 'plain', seed: 1, haystack: hay, needle: 'x', question: 'y', answer: ' ' })).toThrow(/non-empty/);
  });
});
