/**
 * `hipattn serve` end to end: the built CLI spawned as a real server process on loopback (and, for
 * the cases that need a handle on the model, createServer in-process), driven with Node's fetch.
 * npm test builds dist/ first.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/runtime/load.js';
import type { HipModel } from '../src/runtime/model.js';
import { createServer, type HipServer, type ServedModel } from '../src/server/index.js';
import { health, type Json, waitFor } from './server-helpers.js';

const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'src', 'cli', 'main.js');
const STORIES = join(root, 'models', 'stories260K', 'stories260K.gguf');
const TESTBED = join(root, 'models', 'hip-testbed-mini');

interface Spawned {
  url: string;
  proc: ChildProcess;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `hipattn serve … --port 0` and resolves with the address it prints. */
function spawnServer(args: string[]): Promise<Spawned> {
  const proc = spawn(process.execPath, [cli, 'serve', '--device', 'cpu', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 60 s; stderr:\n${err}`)), 60_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1]!, proc, stderr: () => err, exit });
      }
    });
    void exit.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening; stderr:\n${err}`));
    });
  });
}

async function stopServer(s: Spawned | undefined): Promise<void> {
  if (!s || s.proc.exitCode !== null) return;
  s.proc.kill('SIGTERM');
  await s.exit;
}


async function post(url: string, path: string, body: unknown, init: RequestInit = {}): Promise<{ status: number; body: Json; headers: Headers }> {
  const res = await fetch(url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(init.headers as Record<string, string> | undefined) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...(init.signal ? { signal: init.signal } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as Json, headers: res.headers };
}

/** Reads a Server-Sent Events body into its `data:` payloads (JSON parsed, '[DONE]' kept as a string). */
async function readSse(res: Response, onEvent?: (e: Json | string) => void): Promise<(Json | string)[]> {
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const events: (Json | string)[] = [];
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of block.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        const e = data === '[DONE]' ? data : (JSON.parse(data) as Json);
        events.push(e);
        onEvent?.(e);
      }
    }
  }
  expect(buf.trim()).toBe('');
  return events;
}

async function stream(url: string, path: string, body: Json): Promise<(Json | string)[]> {
  const res = await fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
  expect(res.status).toBe(200);
  return readSse(res);
}

/** Text of streamed chunks (completions or chat). */
function streamedText(events: (Json | string)[]): string {
  return events
    .filter((e): e is Json => typeof e !== 'string' && e.choices?.length > 0)
    .map((e) => (e.object === 'chat.completion.chunk' ? (e.choices[0].delta.content ?? '') : e.choices[0].text))
    .join('');
}

/** hip-testbed-mini with a simple chat template, in a temporary folder. */
async function chatModelDir(): Promise<string> {
  const dir = join(await mkdtemp(join(tmpdir(), 'hipattn-serve-')), 'testbed-chat');
  await cp(TESTBED, dir, { recursive: true });
  const cfgPath = join(dir, 'tokenizer_config.json');
  const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as Json;
  cfg.chat_template =
    "{{ bos_token }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";
  await writeFile(cfgPath, JSON.stringify(cfg, null, 2));
  return dir;
}

describe('hipattn serve (stories260K, spawned)', () => {
  let s: Spawned;
  beforeAll(async () => {
    s = await spawnServer(['--model', STORIES, '--attention', 'hip', '--strict-model-id', '--max-prompt-chars-per-token', '8']);
  });
  afterAll(() => stopServer(s));

  it('listens on loopback and reports health and the model', async () => {
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const h = await health(s.url);
    expect(h).toMatchObject({ status: 'ok', model: 'stories260K', active: 0, queued: 0, maxConcurrency: 1 });
    const models = (await (await fetch(`${s.url}/v1/models`)).json()) as Json;
    expect(models.object).toBe('list');
    expect(models.data).toEqual([expect.objectContaining({ id: 'stories260K', object: 'model', owned_by: 'hipattn', max_model_len: 2048 })]);
    expect((await fetch(`${s.url}/v1/models/stories260K`)).status).toBe(200);
  });

  it('completions: streamed deltas concatenate to the non-streamed text at temperature 0, with usage', async () => {
    const req = { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 40, temperature: 0 };
    const full = await post(s.url, '/v1/completions', req);
    expect(full.status).toBe(200);
    expect(full.body).toMatchObject({ object: 'text_completion', model: 'stories260K', choices: [{ index: 0, logprobs: null, finish_reason: 'length' }] });
    expect(full.body.id).toMatch(/^cmpl-/);
    const text = full.body.choices[0].text as string;
    expect(text).toContain('there was a little girl named Lily');
    expect(full.body.usage).toEqual({ prompt_tokens: 5, completion_tokens: 40, total_tokens: 45 });

    const events = await stream(s.url, '/v1/completions', { ...req, stream_options: { include_usage: true } });
    expect(events.at(-1)).toBe('[DONE]');
    expect(streamedText(events)).toBe(text);
    const chunks = events.slice(0, -1) as Json[];
    for (const c of chunks) {
      expect(c).toMatchObject({ object: 'text_completion', id: chunks[0]!.id, model: 'stories260K' });
      expect('usage' in c).toBe(true);
    }
    const finish = chunks.at(-2)!;
    expect(finish.choices).toEqual([{ text: '', index: 0, logprobs: null, finish_reason: 'length' }]);
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 40, total_tokens: 45 } });
    for (const c of chunks.slice(0, -2)) expect(c.choices[0].finish_reason).toBeNull();

    // Without include_usage: no usage chunk and no usage field.
    const plain = await stream(s.url, '/v1/completions', req);
    expect(streamedText(plain)).toBe(text);
    expect(plain.some((e) => typeof e !== 'string' && 'usage' in e)).toBe(false);
  });

  it('completions: stop strings, token-array prompts, one-element prompt arrays, unknown fields ignored', async () => {
    const stopped = await post(s.url, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 60, temperature: 0, stop: ['Lily'], user: 'x', some_extension: { a: 1 } });
    expect(stopped.status).toBe(200);
    expect(stopped.body.choices[0]).toMatchObject({ text: ', there was a little girl named ', finish_reason: 'stop' });
    const streamed = await stream(s.url, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 60, temperature: 0, stop: 'Lily' });
    expect(streamedText(streamed)).toBe(', there was a little girl named ');
    expect((streamed.at(-2) as Json).choices[0].finish_reason).toBe('stop');

    const bare = await post(s.url, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 8, temperature: 0 });
    const wrapped = await post(s.url, '/v1/completions', { prompt: ['Once upon a time'], max_tokens: 8, temperature: 0 });
    expect(wrapped.body.choices[0].text).toBe(bare.body.choices[0].text);
    expect(bare.body.choices[0].text).toMatch(/^, there was a little girl/);
    // BOS (1) alone: the story the model tells from nothing, as `hipattn generate` does.
    const ids = await post(s.url, '/v1/completions', { prompt: [1], max_tokens: 12, temperature: 0 });
    expect(ids.status).toBe(200);
    expect(ids.body.usage.prompt_tokens).toBe(1);
    expect(ids.body.choices[0].text).toContain('Once upon a time');
  });

  it('sampling with a seed is reproducible', async () => {
    const req = { prompt: 'Once upon a time', max_tokens: 24, temperature: 1, top_p: 0.9, top_k: 40, seed: 1234 };
    const a = await post(s.url, '/v1/completions', req);
    const b = await post(s.url, '/v1/completions', req);
    expect(a.status).toBe(200);
    expect(a.body.choices[0].text).toBe(b.body.choices[0].text);
  });

  it('chat without a template of the model (stories260K has none): the ChatML default, the same tokens as its text as a completion', async () => {
    const req = { messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 8, temperature: 0 };
    const chat = await post(s.url, '/v1/chat/completions', req);
    expect(chat.status).toBe(200);
    const text = '<|im_start|>user\nTell me a story<|im_end|>\n<|im_start|>assistant\n';
    const completion = await post(s.url, '/v1/completions', { prompt: text, max_tokens: 8, temperature: 0, stop: ['<|im_end|>'] });
    expect(chat.body.usage.prompt_tokens).toBe(completion.body.usage.prompt_tokens);
    expect(chat.body.choices[0].message.content).toBe(completion.body.choices[0].text);
    expect(chat.body.usage.completion_tokens).toBeGreaterThan(0);
  });

  it('answers every bad request with its 4xx and an OpenAI error body naming the field', async () => {
    const long = 'Once upon a time there was a little girl. '.repeat(60); // ~600 tokens
    const huge = 'Once upon a time there was a little girl. '.repeat(250); // > 2048 tokens
    const cases: [string, unknown, number, string | null, string | null][] = [
      // [path, body, status, param, code]
      ['/v1/completions', '{"prompt": "x",', 400, null, 'invalid_json'],
      ['/v1/completions', '[1, 2]', 400, null, null],
      ['/v1/completions', {}, 400, 'prompt', null],
      ['/v1/completions', { prompt: 42 }, 400, 'prompt', null],
      ['/v1/completions', { prompt: ['a', 'b'] }, 400, 'prompt', null],
      ['/v1/completions', { prompt: [1, 2.5] }, 400, 'prompt', null],
      ['/v1/completions', { prompt: [999999] }, 400, 'prompt', null],
      ['/v1/completions', { prompt: 'x', max_tokens: -1 }, 400, 'max_tokens', null],
      ['/v1/completions', { prompt: 'x', max_tokens: 0 }, 400, 'max_tokens', null],
      ['/v1/completions', { prompt: 'x', max_tokens: '10' }, 400, 'max_tokens', null],
      ['/v1/completions', { prompt: 'x', max_tokens: 1.5 }, 400, 'max_tokens', null],
      ['/v1/completions', { prompt: 'x', max_tokens: 1e9 }, 400, 'max_tokens', null],
      ['/v1/completions', { prompt: long, max_tokens: 1800 }, 400, 'max_tokens', 'context_length_exceeded'],
      ['/v1/completions', { prompt: huge }, 400, 'prompt', 'context_length_exceeded'],
      // Over 2048 × 8 characters: refused before tokenizing.
      ['/v1/completions', { prompt: 'x'.repeat(2048 * 8 + 1) }, 400, 'prompt', 'context_length_exceeded'],
      ['/v1/completions', { prompt: 'x', temperature: 'hot' }, 400, 'temperature', null],
      ['/v1/completions', { prompt: 'x', temperature: 5 }, 400, 'temperature', null],
      ['/v1/completions', { prompt: 'x', top_p: 0 }, 400, 'top_p', null],
      ['/v1/completions', { prompt: 'x', top_k: 1.5 }, 400, 'top_k', null],
      ['/v1/completions', { prompt: 'x', seed: 'x' }, 400, 'seed', null],
      ['/v1/completions', { prompt: 'x', stop: 5 }, 400, 'stop', null],
      ['/v1/completions', { prompt: 'x', stop: ['a', 3] }, 400, 'stop[1]', null],
      ['/v1/completions', { prompt: 'x', stream: 'yes' }, 400, 'stream', null],
      ['/v1/completions', { prompt: 'x', stream_options: { include_usage: true } }, 400, 'stream_options', null],
      ['/v1/completions', { prompt: 'x', n: 2 }, 400, 'n', null],
      ['/v1/completions', { prompt: 'x', logprobs: 5 }, 400, 'logprobs', null],
      ['/v1/completions', { prompt: 'x', echo: true }, 400, 'echo', null],
      ['/v1/completions', { prompt: 'x', model: 'gpt-4' }, 404, 'model', 'model_not_found'],
      ['/v1/completions', { prompt: 'x', model: 7 }, 400, 'model', null],
      ['/v1/chat/completions', {}, 400, 'messages', null],
      ['/v1/chat/completions', { messages: [] }, 400, 'messages', null],
      ['/v1/chat/completions', { messages: 'hi' }, 400, 'messages', null],
      ['/v1/chat/completions', { messages: [{ role: 'user' }] }, 400, 'messages[0].content', null],
      ['/v1/chat/completions', { messages: [{ role: 1, content: 'x' }] }, 400, 'messages[0].role', null],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, 400, 'messages[0].content[0].type', null],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: -2 }, 400, 'max_completion_tokens', null],
    ];
    for (const [path, body, status, param, code] of cases) {
      const r = await post(s.url, path, body);
      const label = `${path} ${typeof body === 'string' ? body : JSON.stringify(body).slice(0, 80)}`;
      expect(r.status, label).toBe(status);
      expect(r.body.error, label).toMatchObject({ type: 'invalid_request_error', param, code });
      expect(typeof r.body.error.message, label).toBe('string');
      if (param !== null) expect(r.body.error.message, label).toContain(param.split('[')[0]);
    }
    expect((await post(s.url, '/v1/completions', { prompt: long, max_tokens: 1800 })).body.error.message).toMatch(/maximum context length is 2048 tokens/);
    expect((await post(s.url, '/v1/completions', { prompt: huge })).body.error.message).toMatch(/'prompt' has \d+ tokens/);
    expect((await post(s.url, '/v1/completions', { prompt: 'x'.repeat(2048 * 8 + 1) })).body.error.message).toMatch(/'prompt' has 16385 characters, more than the 16384 \(8 per token\)/);
    const nf = await fetch(`${s.url}/v1/models/nope`);
    expect(nf.status).toBe(404);
    expect(((await nf.json()) as Json).error.code).toBe('model_not_found');
    expect((await fetch(`${s.url}/v1/nothing-here`)).status).toBe(404);
    // Each refused request has its line on stderr, with its status and error code.
    const logged = s.stderr().split('\n').filter((l) => /^hipattn serve: \/v1\/(chat\/)?completions 4\d\d \| json \| refused \| /.test(l));
    expect(logged.length).toBeGreaterThanOrEqual(cases.length);
    expect(logged.some((l) => / 404 \| .*model_not_found: the model 'gpt-4' does not exist/.test(l))).toBe(true);
    expect(logged.some((l) => / 400 \| .*invalid_json: /.test(l))).toBe(true);
    // Still serving, nothing stuck.
    expect(await health(s.url)).toMatchObject({ status: 'ok', active: 0, queued: 0 });
    expect((await post(s.url, '/v1/completions', { prompt: 'Once', max_tokens: 2 })).status).toBe(200);
  });
});

describe('hipattn serve (testbed with a chat template, spawned)', () => {
  let s: Spawned;
  beforeAll(async () => {
    s = await spawnServer(['--model', await chatModelDir(), '--context-length', '4096', '--max-queue', '16', '--quiet']);
  });
  afterAll(() => stopServer(s));

  it('chat: the template is applied; streamed deltas concatenate to the non-streamed message', async () => {
    const req = { model: 'testbed-chat', messages: [{ role: 'system', content: 'The pass key is 31415.' }, { role: 'user', content: 'What is the pass key?' }], max_tokens: 12, temperature: 0 };
    const full = await post(s.url, '/v1/chat/completions', req);
    expect(full.status).toBe(200);
    expect(full.body).toMatchObject({ object: 'chat.completion', model: 'testbed-chat', choices: [{ index: 0, message: { role: 'assistant' }, logprobs: null }] });
    expect(full.body.id).toMatch(/^chatcmpl-/);
    const content = full.body.choices[0].message.content as string;
    expect(content.length).toBeGreaterThan(0);
    // The rendered prompt is what the template makes: compare with a completion of the same text.
    const rendered = await post(s.url, '/v1/completions', { prompt: 'system: The pass key is 31415.\nuser: What is the pass key?\nassistant:', max_tokens: 12, temperature: 0 });
    expect(rendered.body.usage.prompt_tokens).toBe(full.body.usage.prompt_tokens);
    expect(rendered.body.choices[0].text).toBe(content);
    expect(full.body.usage.total_tokens).toBe(full.body.usage.prompt_tokens + full.body.usage.completion_tokens);

    const events = await stream(s.url, '/v1/chat/completions', { ...req, max_completion_tokens: 12, max_tokens: undefined, stream_options: { include_usage: true } });
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1) as Json[];
    expect(chunks[0]!.choices[0].delta).toEqual({ role: 'assistant', content: '' });
    expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0]!.id)).toBe(true);
    expect(streamedText(events)).toBe(content);
    expect(chunks.at(-2)!.choices[0]).toEqual({ index: 0, delta: {}, logprobs: null, finish_reason: full.body.choices[0].finish_reason });
    expect(chunks.at(-1)!.usage).toEqual(full.body.usage);
    // Text content parts are joined.
    const parts = await post(s.url, '/v1/chat/completions', { ...req, messages: [req.messages[0], { role: 'user', content: [{ type: 'text', text: 'What is the pass key?' }] }] });
    expect(parts.body.choices[0].message.content).toBe(content);
  });

  it("works with OpenAI's official JavaScript client", async () => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual(['testbed-chat']);
    const messages = [{ role: 'user' as const, content: 'The pass key is 31415. What is the pass key?' }];
    const full = await client.chat.completions.create({ model: 'testbed-chat', messages, max_completion_tokens: 8, temperature: 0 });
    expect(full.choices[0]!.message.role).toBe('assistant');
    const streamed = await client.chat.completions.create({ model: 'testbed-chat', messages, max_completion_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of streamed) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(full.choices[0]!.message.content);
    expect(usage).toEqual(full.usage);
    const completion = await client.completions.create({ model: 'testbed-chat', prompt: 'The pass key is', max_tokens: 4, temperature: 0 });
    expect(completion.choices[0]!.finish_reason).toBe('length');
    // Any model name is answered (no --strict-model-id), by the served model.
    const other = await client.completions.create({ model: 'gpt-3.5-turbo-instruct', prompt: 'The pass key is', max_tokens: 4, temperature: 0 });
    expect(other.model).toBe('testbed-chat');
    expect(other.choices[0]!.text).toBe(completion.choices[0]!.text);
    const bad = await client.chat.completions.create({ model: 'testbed-chat', messages, max_tokens: -1 }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect(bad).toMatchObject({ status: 400, param: 'max_tokens' });
  });

  it('a bounded load (50 requests, 8 at a time) finishes without a failure and frees every slot', async () => {
    const before = await health(s.url);
    let next = 0;
    const failures: string[] = [];
    const worker = async (): Promise<void> => {
      for (let i = next++; i < 50; i = next++) {
        const chat = i % 2 === 0;
        const path = chat ? '/v1/chat/completions' : '/v1/completions';
        const body = chat ? { messages: [{ role: 'user', content: `Request ${i}: the pass key is ${1000 + i}.` }], max_tokens: 3 } : { prompt: `The pass key is ${1000 + i}. The pass key is`, max_tokens: 3 };
        try {
          if (i % 4 < 2) {
            const r = await post(s.url, path, body);
            if (r.status !== 200 || r.body.usage.completion_tokens < 1) failures.push(`${i}: ${r.status} ${JSON.stringify(r.body)}`);
          } else {
            const events = await stream(s.url, path, { ...body, stream_options: { include_usage: true } });
            if (events.at(-1) !== '[DONE]' || !(events.at(-2) as Json).usage) failures.push(`${i}: ${JSON.stringify(events.at(-2))}`);
          }
        } catch (e) {
          failures.push(`${i}: ${(e as Error).message}`);
        }
      }
    };
    const peak = { active: 0, queued: 0 };
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const h = await health(s.url);
        peak.active = Math.max(peak.active, h.active);
        peak.queued = Math.max(peak.queued, h.queued);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await Promise.all(Array.from({ length: 8 }, worker));
    watching = false;
    await watcher;
    expect(failures).toEqual([]);
    const after = await health(s.url);
    expect(after).toMatchObject({ active: 0, queued: 0, status: 'ok' });
    expect(after.requests.completed - before.requests.completed).toBe(50);
    expect(after.requests.failed + after.requests.rejected).toBe(before.requests.failed + before.requests.rejected);
    expect(peak.active).toBe(1);
    expect(peak.queued).toBeGreaterThan(0);
    expect(peak.queued).toBeLessThanOrEqual(7);
  });

  it('a client that disconnects mid-stream aborts its generation at once and frees the slot', async () => {
    const before = await health(s.url);
    const ac = new AbortController();
    const res = await fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      // ~4000 tokens: minutes on the CPU if it were not stopped.
      body: JSON.stringify({ prompt: 'The pass key is', max_tokens: 4000, ignore_eos: true, stream: true }),
      signal: ac.signal,
    });
    expect(res.status).toBe(200);
    let got = 0;
    await readSse(res, (e) => {
      if (typeof e !== 'string' && ++got === 3) ac.abort();
    }).catch((e: Error) => expect(e.name).toBe('AbortError'));
    const t0 = Date.now();
    const next = await post(s.url, '/v1/completions', { prompt: 'The pass key is', max_tokens: 2 });
    expect(next.status).toBe(200);
    expect(Date.now() - t0).toBeLessThan(5000);
    const after = await waitFor(
      () => health(s.url),
      (h) => h.requests.clientClosed > before.requests.clientClosed,
    );
    expect(after).toMatchObject({ active: 0, queued: 0 });
    expect(after.requests.clientClosed).toBe(before.requests.clientClosed + 1);
    // The aborted generation stopped after a few tokens, far from its 4000.
    expect(after.tokens.completion - before.tokens.completion).toBeLessThan(100);
  });
});

describe('createServer (in-process, stories260K)', () => {
  let model: HipModel;
  beforeAll(async () => {
    model = await loadModel(STORIES, { device: 'cpu', attention: 'dense' });
  });
  afterAll(() => model?.dispose());

  const start = async (opts: Parameters<typeof createServer>[1] = {}, m: ServedModel = model): Promise<{ server: HipServer; url: string }> => {
    const server = await createServer(m, { port: 0, ...opts });
    const { url } = await server.listen();
    return { server, url };
  };
  const longStream = (url: string, signal: AbortSignal, maxTokens = 1800): Promise<Response> =>
    fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: maxTokens, ignore_eos: true, stream: true }),
      signal,
    });

  it('beyond the queue bound answers 429 with Retry-After; a queued request whose client left is dropped', async () => {
    const { server, url } = await start({ maxQueue: 1 });
    try {
      const a = new AbortController();
      const b = new AbortController();
      const resA = await longStream(url, a.signal);
      expect(resA.status).toBe(200);
      const pendingB = longStream(url, b.signal).catch((e: Error) => e);
      await waitFor(() => health(url), (h) => h.queued === 1);
      const c = await post(url, '/v1/completions', { prompt: 'Once', max_tokens: 2 });
      expect(c.status).toBe(429);
      expect(c.headers.get('retry-after')).toBe('1');
      expect(c.body.error).toMatchObject({ type: 'rate_limit_error', code: 'rate_limit_exceeded', param: null });
      // B's client gives up while queued: it leaves the queue at once.
      b.abort();
      expect(await pendingB).toBeInstanceOf(Error);
      const h = await waitFor(() => health(url), (x) => x.queued === 0);
      expect(h).toMatchObject({ active: 1, queued: 0 });
      expect(h.requests.rejected).toBe(1);
      a.abort();
      const done = await waitFor(() => health(url), (x) => x.active === 0);
      expect(done.requests.clientClosed).toBe(2);
      expect((await post(url, '/v1/completions', { prompt: 'Once', max_tokens: 2 })).status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('several model copies run several generations at once', async () => {
    const second = await loadModel(STORIES, { device: 'cpu', attention: 'dense' });
    const server = await createServer([model, second], { port: 0, maxQueue: 0 });
    const { url } = await server.listen();
    try {
      const a = new AbortController();
      const b = new AbortController();
      const [ra, rb] = await Promise.all([longStream(url, a.signal), longStream(url, b.signal)]);
      expect([ra.status, rb.status]).toEqual([200, 200]);
      expect(await health(url)).toMatchObject({ active: 2, queued: 0, maxConcurrency: 2 });
      expect((await post(url, '/v1/completions', { prompt: 'Once', max_tokens: 2 })).status).toBe(429);
      a.abort();
      b.abort();
      expect(await waitFor(() => health(url), (h) => h.active === 0)).toMatchObject({ active: 0, queued: 0 });
      // Either slot gives the same greedy text.
      const x = await post(url, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 6, temperature: 0 });
      expect(x.body.choices[0].text).toMatch(/^, there was a/);
    } finally {
      await server.close();
      await second.dispose();
    }
  });

  it('checks the API key on /v1 requests (not /health)', async () => {
    const { server, url } = await start({ apiKey: 'sekrit' });
    try {
      expect((await fetch(`${url}/health`)).status).toBe(200);
      const none = await fetch(`${url}/v1/models`);
      expect(none.status).toBe(401);
      expect(((await none.json()) as Json).error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_api_key' });
      expect((await post(url, '/v1/completions', { prompt: 'Once', max_tokens: 2 }, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
      const ok = await post(url, '/v1/completions', { prompt: 'Once', max_tokens: 2 }, { headers: { authorization: 'Bearer sekrit' } });
      expect(ok.status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('API key: no spelling of a /v1 or /model path gets past it (raw sockets and fetch)', async () => {
    const { server, url } = await start({ apiKey: 'sekrit', modelFiles: TESTBED });
    const { port } = new URL(url);
    const authority = `127.0.0.1:${port}`;
    const body = JSON.stringify({ prompt: 'Once', max_tokens: 1 });
    // Request targets that the router sends to a protected handler: percent-escapes (decoded before
    // matching), absolute-form targets (RFC 9112 §3.2.2), both at once, a query string.
    const spellings: [method: 'GET' | 'POST', target: string][] = [
      ['POST', '/v1/completions'],
      ['POST', '/%761/completions'],
      ['POST', '/v%31/%63ompletions'],
      ['POST', '/%76%31/completions'],
      ['POST', `http://${authority}/v1/completions`],
      ['POST', `http://${authority}/%761/completions`],
      ['POST', `HTTP://${authority}/v1/completions?x=1`],
      ['GET', '/v1/models'],
      ['GET', '/%761/models'],
      ['GET', `/v1/models/${model.name}`],
      ['GET', `/v1/models/%${model.name.charCodeAt(0).toString(16)}${model.name.slice(1)}`],
      ['GET', `http://${authority}/v1/models`],
      ['GET', '/model/files.json'],
      ['GET', '/%6Dodel/files.json'],
      ['GET', '/model/%6Dodel.safetensors'],
      ['GET', `http://${authority}/model/model.safetensors`],
    ];
    // Spellings that may not route anywhere; they must not reach a handler either.
    const oddities: [method: 'GET' | 'POST', target: string][] = [
      ['POST', '//v1/completions'],
      ['POST', '/v1//completions'],
      ['POST', '/V1/completions'],
      ['POST', '/v1/completions/'],
      ['POST', '/./v1/completions'],
      ['POST', '/x/../v1/completions'],
      ['POST', '/%2Fv1/completions'],
      ['POST', '/v1%2Fcompletions'],
      ['POST', `http://${authority}//v1/completions`],
      ['POST', `http://evil.example/v1/completions`],
      ['GET', '/model/..%2Fconfig.json'],
    ];
    const raw = (method: string, target: string, key?: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const sock = connect(Number(port), '127.0.0.1');
        let got = '';
        sock.setTimeout(10_000, () => sock.destroy(new Error(`no answer to ${method} ${target}`)));
        sock.on('data', (d: Buffer) => {
          got += d.toString('latin1');
          const m = /^HTTP\/1\.1 (\d{3})/.exec(got);
          if (m) {
            sock.destroy();
            resolve(Number(m[1]));
          }
        });
        sock.on('error', reject);
        sock.on('close', () => (/^HTTP/.test(got) ? undefined : reject(new Error(`connection closed without an answer to ${method} ${target}`))));
        const payload = method === 'POST' ? body : '';
        sock.write(
          `${method} ${target} HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n` +
            (key ? `Authorization: Bearer ${key}\r\n` : '') +
            (method === 'POST' ? `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n` : '') +
            `\r\n${payload}`,
        );
      });
    try {
      for (const [method, target] of spellings) {
        // With the key the spelling reaches its handler (so without one it would have reached the model) …
        expect(await raw(method, target, 'sekrit'), `${method} ${target} with the key`).toBe(200);
        // … and without the key, or with a wrong one, it is refused.
        expect(await raw(method, target), `${method} ${target} without a key`).toBe(401);
        expect(await raw(method, target, 'sekrit2'), `${method} ${target} with a wrong key`).toBe(401);
      }
      for (const [method, target] of oddities) {
        const status = await raw(method, target);
        expect(status === 401 || (status >= 400 && status !== 200 && status < 500), `${method} ${target} without a key: ${status}`).toBe(true);
      }
      // The same through fetch (which normalises the path it sends, but not percent-escapes).
      for (const path of ['/%761/models', `/v%31/models/${model.name}`, '/%6Dodel/model.safetensors']) {
        expect((await fetch(url + path)).status, path).toBe(401);
        expect((await fetch(url + path, { headers: { authorization: 'Bearer sekrit' } })).status, path).toBe(200);
      }
      expect((await post(url, '/%761/completions', { prompt: 'Once', max_tokens: 1 })).status).toBe(401);
      // Public with a key set: the health check.
      expect(await raw('GET', '/health')).toBe(200);
      expect(await raw('GET', '/%68ealth')).toBe(200);
      // Only the requests sent with the right key ran the model.
      expect((await health(url)).requests.completed).toBe(spellings.filter(([m]) => m === 'POST').length);
    } finally {
      await server.close();
    }
  });

  it("chat stops at the model's chat stop strings (<|im_end|> of the ChatML default); completions do not", async () => {
    const seen: { stopStrings?: readonly string[] }[] = [];
    expect(model.chatStopStrings).toEqual(['<|im_end|>']); // stories260K has no chat template
    const spy: ServedModel = {
      name: model.name,
      contextLength: model.contextLength,
      encode: (p) => model.encode(p),
      chatStopStrings: model.chatStopStrings,
      stream: (p, o) => {
        seen.push({ stopStrings: o?.stopStrings });
        return model.stream(p, o);
      },
    };
    const { server, url } = await start({}, spy);
    try {
      expect((await post(url, '/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, stop: ['zz'] })).status).toBe(200);
      expect((await post(url, '/v1/completions', { prompt: 'Hi', max_tokens: 2, stop: ['zz'] })).status).toBe(200);
      expect(seen.map((x) => x.stopStrings)).toEqual([['zz', '<|im_end|>'], ['zz']]);
    } finally {
      await server.close();
    }
  });

  it('a model error mid-generation becomes a stream error event or a 500, and the server keeps serving', async () => {
    let calls = 0;
    const failing: ServedModel = {
      name: model.name,
      contextLength: model.contextLength,
      encode: (p) => model.encode(p),
      stream: async function* (prompt, opts) {
        calls++;
        let n = 0;
        for await (const t of model.stream(prompt, opts)) {
          yield t;
          if (++n === 3 && calls <= 2) throw new Error('simulated device loss');
        }
        return model.generate({ ids: [1] }, { maxNewTokens: 1 }); // never reached in the failing calls
      },
    };
    const { server, url } = await start({}, failing);
    try {
      const r = await post(url, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 20, temperature: 0 });
      expect(r.status).toBe(500);
      expect(r.body.error).toMatchObject({ type: 'server_error' });
      expect(r.body.error.message).toMatch(/simulated device loss/);
      const events = await stream(url, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 20, temperature: 0 });
      expect(events.at(-1)).toBe('[DONE]');
      expect((events.at(-2) as Json).error).toMatchObject({ type: 'server_error', message: expect.stringMatching(/simulated device loss/) });
      expect(streamedText(events.slice(0, -2))).toBe(', there was');
      const h = await health(url);
      expect(h).toMatchObject({ active: 0, queued: 0 });
      expect(h.requests.failed).toBe(2);
      expect((await post(url, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 4, temperature: 0 })).status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('close(): queued requests get 503, the running one finishes, and the server stops', async () => {
    const { server, url } = await start({ shutdownGraceMs: 60_000 });
    const running = await longStream(url, new AbortController().signal, 400);
    const queued = post(url, '/v1/completions', { prompt: 'Once', max_tokens: 2 });
    await waitFor(() => health(url), (h) => h.queued === 1);
    const closed = server.close();
    const q = await queued;
    expect(q.status).toBe(503);
    expect(q.body.error.code).toBe('server_shutting_down');
    const events = await readSse(running);
    expect(events.at(-1)).toBe('[DONE]');
    expect((events.at(-2) as Json).choices[0].finish_reason).toBe('length');
    await closed;
    await expect(fetch(`${url}/health`)).rejects.toThrow();
  });

  it('serves a static folder at / when staticDir is given, API routes first', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hipattn-static-'));
    await writeFile(join(dir, 'index.html'), '<!doctype html><title>hipattn app</title>');
    await writeFile(join(dir, 'app.js'), 'console.log(1)');
    const { server, url } = await start({ staticDir: dir, apiKey: 'k' });
    try {
      const index = await fetch(`${url}/`);
      expect(index.status).toBe(200);
      expect(await index.text()).toContain('hipattn app');
      expect((await fetch(`${url}/app.js`)).headers.get('content-type')).toMatch(/javascript/);
      expect((await fetch(`${url}/health`)).status).toBe(200);
      expect((await fetch(`${url}/v1/models`)).status).toBe(401);
      expect((await fetch(`${url}/missing.js`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });

  it('offers a local model to a browser app at /model/ (modelFiles): only its model files, byte for byte', async () => {
    const { server, url } = await start({ modelFiles: TESTBED, apiKey: 'k' });
    const withKey = { headers: { authorization: 'Bearer k' } };
    try {
      // With an API key set, the weights are not public.
      expect((await fetch(`${url}/model/files.json`)).status).toBe(401);
      expect((await fetch(`${url}/model/model.safetensors`)).status).toBe(401);
      const list = (await (await fetch(`${url}/model/files.json`, withKey)).json()) as { name: string; files: string[] };
      expect(list).toEqual({ name: 'hip-testbed-mini', files: ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'] });
      const weights = await fetch(`${url}/model/model.safetensors`, withKey);
      expect(weights.status).toBe(200);
      expect(Buffer.from(await weights.arrayBuffer()).equals(await readFile(join(TESTBED, 'model.safetensors')))).toBe(true);
      expect(await (await fetch(`${url}/model/config.json`, withKey)).json()).toEqual(JSON.parse(await readFile(join(TESTBED, 'config.json'), 'utf8')));
      for (const bad of ['README.md', 'golden.json', '..%2Fpackage.json', '%2E%2E%2Fconfig.json']) expect((await fetch(`${url}/model/${bad}`, withKey)).status, bad).toBe(404);
    } finally {
      await server.close();
    }
    const gguf = await start({ modelFiles: STORIES });
    try {
      expect(await (await fetch(`${gguf.url}/model/files.json`)).json()).toEqual({ name: 'stories260K', files: ['stories260K.gguf'] });
      expect((await fetch(`${gguf.url}/model/stories260K.gguf`)).headers.get('content-length')).toBe(String((await readFile(STORIES)).length));
    } finally {
      await gguf.server.close();
    }
    await expect(start({ modelFiles: join(TESTBED, 'README.md') })).rejects.toThrow(/neither a model directory nor a \.gguf file/);
  });
});

describe('hipattn serve shutdown (spawned)', () => {
  it('SIGTERM with a streaming request in flight: the stream completes, new connections are refused, exit code 0', async () => {
    const s = await spawnServer(['--model', STORIES, '--attention', 'dense']);
    try {
      const res = await fetch(`${s.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 400, ignore_eos: true, stream: true, stream_options: { include_usage: true } }),
      });
      let signalled = false;
      let accepting: Promise<number | 'refused'> | undefined;
      const events = await readSse(res, (e) => {
        if (!signalled && typeof e !== 'string') {
          signalled = true;
          s.proc.kill('SIGTERM');
          // Listening stops at once (a kept-alive connection would get 503).
          accepting = new Promise((r) => setTimeout(r, 200)).then(() => fetch(`${s.url}/health`).then((x) => x.status, () => 'refused' as const));
        }
      });
      expect([503, 'refused']).toContain(await accepting);
      expect(events.at(-1)).toBe('[DONE]');
      expect((events.at(-2) as Json).usage.completion_tokens).toBe(400);
      expect((events.at(-3) as Json).choices[0].finish_reason).toBe('length');
      expect(await s.exit).toEqual({ code: 0, signal: null });
      expect(s.stderr()).toMatch(/SIGTERM: shutting down/);
      expect(s.stderr()).toMatch(/stopped/);
    } finally {
      await stopServer(s);
    }
  });

  it('SIGTERM past the grace period: the stream ends with an error event and [DONE], exit code 0', async () => {
    const s = await spawnServer(['--model', STORIES, '--attention', 'dense', '--shutdown-grace', '0.3']);
    try {
      const res = await fetch(`${s.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 2000, ignore_eos: true, stream: true }),
      });
      const t0 = Date.now();
      let signalled = false;
      const events = await readSse(res, (e) => {
        if (!signalled && typeof e !== 'string') {
          signalled = true;
          s.proc.kill('SIGTERM');
        }
      });
      expect(Date.now() - t0).toBeLessThan(15_000);
      // Cut short: far fewer than the 2000 tokens asked for.
      expect(events.filter((e) => typeof e !== 'string' && e.choices?.length > 0).length).toBeLessThan(1000);
      expect(events.at(-1)).toBe('[DONE]');
      expect((events.at(-2) as Json).error).toMatchObject({ type: 'server_error', code: 'server_shutting_down' });
      expect(await s.exit).toEqual({ code: 0, signal: null });
    } finally {
      await stopServer(s);
    }
  });

  it('refuses bad flags with exit code 2', async () => {
    const s = spawnServer(['--model', STORIES, '--max-concurrency', '0']);
    await expect(s).rejects.toThrow(/exited with 2 before listening[\s\S]*--max-concurrency must be at least 1/);
    const t = spawnServer(['--model', STORIES, '--headers-timeout', '5', '--request-timeout', '1']);
    await expect(t).rejects.toThrow(/exited with 2 before listening[\s\S]*--headers-timeout must not be longer than --request-timeout/);
  });
});
