/**
 * Tokenizers beyond golden ids: streaming decode (multi-byte characters split across tokens),
 * chat templates (Hugging Face and GGUF), and the generation loop's stop handling.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HipAttnError } from '../errors.js';
import { encodeChat, renderChat } from './chat-template.js';
import { generate, generateTokens } from './generate.js';
import { LlamaCpu } from './llama-cpu.js';
import { openModelPath } from './node-load.js';
import { SpmTokenizer } from './spm-tokenizer.js';
import { HfTokenizer, StreamDecoder, type TextTokenizer } from './tokenizer.js';
import { loadLlamaWeightsF32 } from './weights.js';

const MINI = 'models/hip-testbed-mini';
const tokenizerJson = JSON.parse(readFileSync(`${MINI}/tokenizer.json`, 'utf8')) as unknown;
const tokenizerConfig = JSON.parse(readFileSync(`${MINI}/tokenizer_config.json`, 'utf8')) as Record<string, unknown>;
const golden = JSON.parse(readFileSync(`${MINI}/golden.json`, 'utf8')) as { tokenizer: { text: string; ids: number[] }[] };
const stories = openModelPath('models/stories260K/stories260K.gguf').then(async (m) => ({ m, w: await loadLlamaWeightsF32(m.config, m.store) }));

const CHATML =
  "{{ bos_token }}{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role ' + m['role']) }}{% endif %}" +
  "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

function streamAll(tok: TextTokenizer, ids: number[], context: number[] = []): string[] {
  const d = new StreamDecoder(tok, context);
  const parts = ids.map((id) => d.push(id));
  parts.push(d.flush());
  return parts;
}

describe('streaming decode', () => {
  const tok = new HfTokenizer({ tokenizerJson, tokenizerConfig });

  it('byte-level BPE: the pieces concatenate to the full decode and never hold half a character', () => {
    for (const t of golden.tokenizer) {
      const parts = streamAll(tok, t.ids);
      expect(parts.join('')).toBe(t.text);
      for (const p of parts) expect(p).not.toContain('\uFFFD');
    }
    // The emoji string splits 4-byte characters over several tokens: some pushes must wait.
    const emoji = golden.tokenizer.find((t) => t.text.includes('🎉'))!;
    expect(streamAll(tok, emoji.ids).filter((p) => p === '').length).toBeGreaterThan(0);
  });

  it('SentencePiece: leading spaces come out right mid-text, bytes across tokens are joined', async () => {
    const { m } = await stories;
    const spm = m.tokenizer;
    const all = spm.encode('Once upon a time, 日本 🎉 there');
    const prompt = spm.encode('Once upon a');
    expect(all.slice(0, prompt.length)).toEqual(prompt);
    expect(spm.idToToken(all[prompt.length]!)).toBe('▁time');
    // After the prompt, "▁time" must print " time", not "time" (SentencePiece drops only a text's first space).
    const parts = streamAll(spm, all.slice(prompt.length), prompt);
    expect(parts.join('')).toBe(' time, 日本 🎉 there');
    for (const p of parts) expect(p).not.toContain('\uFFFD');
    // 🎉 is four byte tokens: three pushes show nothing, the fourth the whole character.
    expect(parts.filter((p) => p === '').length).toBeGreaterThanOrEqual(3);
    const full = streamAll(spm, all.slice(1), all.slice(0, 1));
    expect(full.join('')).toBe('Once upon a time, 日本 🎉 there');
  });
});

describe('chat templates', () => {
  it('renders a Hugging Face chat_template with messages, special tokens and the generation prompt', () => {
    const tok = new HfTokenizer({ tokenizerJson, tokenizerConfig: { ...tokenizerConfig, chat_template: CHATML } });
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi there' },
    ];
    const text = renderChat(tok, messages);
    expect(text).toBe('<|begin_of_text|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n');
    expect(renderChat(tok, messages, { addGenerationPrompt: false }).endsWith('Hi there<|im_end|>\n')).toBe(true);
    const ids = encodeChat(tok, messages);
    expect(ids[0]).toBe(0); // BOS from the template, exactly once
    expect(ids.filter((id) => id === 0).length).toBe(1);
    expect(tok.decode(ids)).toBe(text);
    // A template can refuse input.
    expect(() => renderChat(tok, [{ role: 'tool', content: 'x' }])).toThrow(/unknown role tool/);
  });

  it('takes the "default" entry of a list of named templates, or a chat_template.jinja', () => {
    const tok = new HfTokenizer({
      tokenizerJson,
      tokenizerConfig: { ...tokenizerConfig, chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D{{ messages[0].content }}' }] },
    });
    expect(renderChat(tok, [{ role: 'user', content: 'x' }])).toBe('Dx');
    const j = new HfTokenizer({ tokenizerJson, tokenizerConfig: { ...tokenizerConfig, chat_template: 'config' }, chatTemplate: 'jinja file' });
    expect(renderChat(j, [])).toBe('jinja file');
  });

  it('a model without a template gets ChatML (BOS first, as its own ChatML template would give); a broken one gives a TOKENIZER error', async () => {
    const conversation = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hello there' },
    ];
    const none = new HfTokenizer({ tokenizerJson, tokenizerConfig });
    expect(renderChat(none, conversation)).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n');
    expect(renderChat(none, conversation, { addGenerationPrompt: false })).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n');
    // the same ids as a tokenizer whose config carries an explicit ChatML template with {{ bos_token }}
    const explicit = new HfTokenizer({ tokenizerJson, tokenizerConfig: { ...tokenizerConfig, chat_template: CHATML } });
    expect(encodeChat(none, conversation)).toEqual(encodeChat(explicit, conversation));
    expect(encodeChat(none, conversation)[0]).toBe(none.bosTokenId);
    // a GGUF model without tokenizer.chat_template (stories260K), against the same template set on its vocabulary
    const { m } = await stories;
    const spm = m.tokenizer as SpmTokenizer;
    const withTemplate = Object.create(spm, { chatTemplate: { value: CHATML } }) as TextTokenizer;
    expect(encodeChat(m.tokenizer, conversation)).toEqual(encodeChat(withTemplate, conversation));
    expect(m.tokenizer.decode(encodeChat(m.tokenizer, conversation), { skipSpecialTokens: true })).toContain('<|im_start|>user\nHello there<|im_end|>');
    const broken = new HfTokenizer({ tokenizerJson, tokenizerConfig: { chat_template: '{% for m in messages %}' } });
    expect(() => renderChat(broken, [{ role: 'user', content: 'x' }])).toThrow(expect.objectContaining({ code: 'TOKENIZER' }));
    expect(() => renderChat(none, [{ role: 'user' }] as never)).toThrow(expect.objectContaining({ code: 'REQUEST' }));
  });

  it('a GGUF SentencePiece vocabulary with a Llama-2 template: <s> in the template becomes BOS', async () => {
    const { m } = await stories;
    const s = m.tokenizer as SpmTokenizer;
    const vocab = { tokens: [] as string[], scores: [] as number[], types: [] as number[] };
    for (let i = 0; i < s.vocabSize; i++) {
      vocab.tokens.push(s.idToToken(i)!);
    }
    const g = await import('./gguf.js');
    const file = await g.readGguf(await (await import('./node-files.js')).fileSource('models/stories260K/stories260K.gguf'));
    const tok = new SpmTokenizer({
      tokens: file.metadata.get('tokenizer.ggml.tokens') as string[],
      scores: file.metadata.get('tokenizer.ggml.scores') as number[],
      types: file.metadata.get('tokenizer.ggml.token_type') as number[],
      bosTokenId: 1,
      eosTokenIds: [2],
      chatTemplate: "{% for m in messages %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}",
    });
    await file.source.close();
    expect(renderChat(tok, [{ role: 'user', content: 'Hi' }])).toBe('<s>[INST] Hi [/INST]');
    const ids = encodeChat(tok, [{ role: 'user', content: 'Hi' }]);
    expect(ids[0]).toBe(1);
    expect(ids.filter((id) => id === 1).length).toBe(1);
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('[INST] Hi [/INST]');
  });
});

describe('generation loop', () => {
  it('stops at a stop string (not emitted), streams exactly the final text', async () => {
    const { m, w } = await stories;
    const lm = new LlamaCpu(m.config, w, { capacity: 256 });
    const chunks: string[] = [];
    const it = generateTokens(lm, m.tokenizer, [1], { maxNewTokens: 100, temperature: 0, stopStrings: ['girl named'] });
    let r = await it.next();
    while (!r.done) {
      chunks.push(r.value.text);
      r = await it.next();
    }
    expect(r.value.text).toBe('Once upon a time, there was a little ');
    expect(r.value.finishReason).toBe('stop');
    expect(chunks.join('')).toBe(r.value.text);
    for (const c of chunks) expect(c).not.toContain('girl');
  });

  it('maxNewTokens, seeded sampling, held-back text released at the end', async () => {
    const { m, w } = await stories;
    const lm = new LlamaCpu(m.config, w, { capacity: 256 });
    const a = await generate(lm, m.tokenizer, [1], { maxNewTokens: 30, temperature: 0.9, topP: 0.95, seed: 7 });
    const b = await generate(lm, m.tokenizer, [1], { maxNewTokens: 30, temperature: 0.9, topP: 0.95, seed: 7 });
    expect(a.ids.length).toBe(30);
    expect(a.finishReason).toBe('length');
    expect(b.ids).toEqual(a.ids);
    expect(a.text).toBe(m.tokenizer.decode(a.ids, { skipSpecialTokens: true }));
    // A stop string that never completes is held back while it might, then released.
    const greedy = await generate(lm, m.tokenizer, [1], { maxNewTokens: 3, temperature: 0 });
    const chunks: string[] = [];
    for await (const t of generateTokens(lm, m.tokenizer, [1], { maxNewTokens: 3, temperature: 0, stopStrings: [greedy.text + ' never'] })) chunks.push(t.text);
    expect(chunks.join('')).toBe(greedy.text);
    expect(chunks.slice(0, 3).join('')).toBe('');
  });

  it('a generated BOS (how llama2.c models end a story) or EOS ends generation with finishReason "stop"', async () => {
    const { m, w } = await stories;
    const lm = new LlamaCpu(m.config, w, { capacity: 512 });
    const r = await generate(lm, m.tokenizer, [1], { maxNewTokens: 400, temperature: 0 });
    expect(r.finishReason).toBe('stop');
    expect(r.ids.length).toBeLessThan(400);
    expect(r.ids).not.toContain(1);
    expect(r.ids).not.toContain(2);
    expect(r.text.endsWith('You are a good friend."')).toBe(true);
    const stopAt = r.ids.indexOf(r.ids[20]!); // first occurrence of some token
    const custom = await generate(lm, m.tokenizer, [1], { maxNewTokens: 50, temperature: 0, stopTokenIds: [r.ids[20]!] });
    expect(custom.ids).toEqual(r.ids.slice(0, stopAt));
    expect(custom.text).toBe(m.tokenizer.decode(r.ids.slice(0, stopAt)));
  });
});
