/**
 * A bounded soak of the server (loopback, in-process, stories260K on the CPU, two slots): for a
 * fixed time, normal and streamed requests, clients that abort mid-stream, slow clients and
 * malformed requests (bad JSON, wrong types, oversize bodies, wrong methods) all at once.
 * Afterwards the server is healthy with no slot or queue place leaked, every well-formed request
 * got a well-formed answer, and the heap is back near where it started.
 */
import { connect } from 'node:net';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/runtime/load.js';
import type { HipModel } from '../src/runtime/model.js';
import { createServer, type ServerStats } from '../src/server/index.js';
import type { Rng } from '../src/util/rng.js';
import { seededRng } from './helpers.js';
import { type Json, sleep } from './server-helpers.js';

const STORIES = join(import.meta.dirname, '..', 'models', 'stories260K', 'stories260K.gguf');
/** How long the mixed load runs. */
const SOAK_MS = 20_000;
/** How far the heap (after a full GC) may end above where it started. */
const HEAP_SLACK_BYTES = 48 * 2 ** 20;


/** A full garbage collection (gc is not exposed without --expose-gc: expose it for this process). */
function collect(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

function isError(body: unknown, status: number): boolean {
  const e = (body as Json | undefined)?.error;
  return typeof e === 'object' && e !== null && typeof e.message === 'string' && typeof e.type === 'string' && 'param' in e && 'code' in e && (status >= 500 ? e.type === 'server_error' : true);
}


describe('server soak (in-process, stories260K, two slots)', () => {
  const models: HipModel[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 2; i++) models.push(await loadModel(STORIES, { device: 'cpu', attention: 'dense' }));
  });
  afterAll(() => Promise.all(models.map((m) => m.dispose())));

  it(`${SOAK_MS / 1000} s of mixed load leaves it healthy, with nothing leaked`, async () => {
    const rng = seededRng('server soak');
    const server = await createServer(models, {
      port: 0,
      // Six clients generate at once on two slots: some find the queue full (429).
      maxQueue: 2,
      bodyLimit: 64 * 1024,
      headersTimeoutMs: 800,
      requestTimeoutMs: 2000,
      keepAliveTimeoutMs: 1000,
      idleTimeoutMs: 1500,
    });
    const { url, port } = await server.listen();
    const counts: Record<string, number> = {};
    const failures: string[] = [];
    const count = (what: string): void => {
      counts[what] = (counts[what] ?? 0) + 1;
    };
    const fail = (what: string): void => {
      if (failures.length < 20) failures.push(what);
    };
    try {
      // Warm up (first-call costs), then measure where the heap starts.
      const warm = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Once', max_tokens: 4 }) });
      expect(warm.status).toBe(200);
      await warm.text();
      collect();
      const heapBefore = process.memoryUsage().heapUsed;
      const deadline = Date.now() + SOAK_MS;

      const prompts = ['Once upon a time', 'Lily and Ben', 'The little dog ran', 'One day, a bird'];
      const generationBody = (r: Rng): { prompt: string; max_tokens: number; temperature: number; seed: number } => ({ prompt: `${prompts[r.int(prompts.length)]} ${r.int(1000)}`, max_tokens: 1 + r.int(24), temperature: r.int(2), seed: r.int(1e6) });

      const post = async (body: string, path = '/v1/completions'): Promise<{ status: number; body: unknown }> => {
        const res = await fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        const text = await res.text();
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = text;
        }
        return { status: res.status, body: parsed };
      };

      const normal = async (r: Rng): Promise<void> => {
        const body = generationBody(r);
        const res = await post(JSON.stringify(body));
        const b = res.body as Json;
        if (res.status === 200) {
          const ok = b.object === 'text_completion' && typeof b.choices?.[0]?.text === 'string' && ['stop', 'length'].includes(b.choices[0].finish_reason) && b.usage.completion_tokens <= body.max_tokens && b.usage.total_tokens === b.usage.prompt_tokens + b.usage.completion_tokens;
          if (!ok) fail(`normal: ${JSON.stringify(b)}`);
          count('normal 200');
        } else if (res.status === 429 && isError(b, 429) && b.error.code === 'rate_limit_exceeded') {
          count('normal 429');
          await sleep(100 + r.int(200)); // back off, as Retry-After asks
        } else fail(`normal: ${res.status} ${JSON.stringify(b)}`);
      };

      const streamed = async (r: Rng, abortAfter?: number): Promise<void> => {
        const ac = new AbortController();
        const body = { ...generationBody(r), stream: true, stream_options: { include_usage: true }, ...(abortAfter !== undefined ? { max_tokens: 400, ignore_eos: true } : {}) };
        const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: ac.signal });
        if (res.status === 429) {
          if (isError(await res.json(), 429)) count('stream 429');
          else fail('stream 429 without an error body');
          return sleep(100 + r.int(200));
        }
        if (res.status !== 200) return fail(`stream: ${res.status} ${await res.text()}`);
        const decoder = new TextDecoder();
        let buf = '';
        const events: (Json | string)[] = [];
        try {
          for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
            buf += decoder.decode(chunk, { stream: true });
            for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
              const data = buf.slice(0, i).replace(/^data: /, '');
              buf = buf.slice(i + 2);
              events.push(data === '[DONE]' ? data : (JSON.parse(data) as Json));
              if (abortAfter !== undefined && events.length >= abortAfter) ac.abort();
            }
          }
        } catch (e) {
          if (abortAfter !== undefined && (e as Error).name === 'AbortError') return count('stream aborted');
          throw e;
        }
        if (abortAfter !== undefined) return count('stream aborted'); // finished before the abort
        const usage = (events.at(-2) as Json | undefined)?.usage;
        if (events.at(-1) !== '[DONE]' || !usage || usage.completion_tokens > body.max_tokens) fail(`stream: ${JSON.stringify(events.slice(-3))}`);
        else count('stream 200');
      };

      const malformed = async (r: Rng): Promise<void> => {
        const kinds: [name: string, send: () => Promise<{ status: number; body: unknown }>, status: number][] = [
          ['bad json', () => post('{"prompt": "x",'), 400],
          ['wrong type', () => post(JSON.stringify({ prompt: 'x', max_tokens: 'many' })), 400],
          ['no prompt', () => post(JSON.stringify({ max_tokens: 3 })), 400],
          ['chat without messages', () => post(JSON.stringify({ messages: 'hi' }), '/v1/chat/completions'), 400],
          ['oversize body', () => post(JSON.stringify({ prompt: 'x'.repeat(70 * 1024) })), 413],
          ['too long prompt', () => post(JSON.stringify({ prompt: 'Once upon a time. '.repeat(1500) })), 400],
          [
            'wrong method',
            async () => {
              const res = await fetch(`${url}/v1/completions`, { method: ['GET', 'DELETE', 'PUT', 'OPTIONS'][r.int(4)]! });
              return { status: res.status, body: await res.json() };
            },
            405,
          ],
        ];
        const [name, send, status] = kinds[r.int(kinds.length)]!;
        const res = await send();
        if (res.status === status && isError(res.body, status)) count(`malformed ${status}`);
        else fail(`${name}: ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
      };

      /** A client that sends its headers one byte at a time: the server must hang up on it. */
      const slowloris = async (): Promise<void> => {
        const sock = connect(port, '127.0.0.1');
        sock.on('error', () => undefined);
        const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
        const header = `POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ${'p'.repeat(200)}\r\n\r\n`;
        let sent = 0;
        while (!sock.destroyed && sent < header.length) {
          sock.write(header[sent++]!);
          await sleep(100);
        }
        await closed;
        if (sent >= header.length) fail('slowloris: the server read the whole slow header');
        else count('slow client closed');
      };

      const worker = async (name: string, job: (r: Rng) => Promise<void>, seed: number): Promise<void> => {
        const r = seededRng(`server soak ${name} ${seed}`);
        while (Date.now() < deadline) {
          try {
            await job(r);
          } catch (e) {
            fail(`${name}: ${(e as Error).message}`);
          }
        }
      };
      await Promise.all([
        worker('normal', normal, 0),
        worker('normal', normal, 1),
        worker('normal', normal, 2),
        worker('stream', (r) => streamed(r), 0),
        worker('stream', (r) => streamed(r), 1),
        worker('abort', (r) => streamed(r, 1 + r.int(6)), 0),
        worker('malformed', malformed, 0),
        worker('malformed', malformed, 1),
        worker('slowloris', slowloris, 0),
        worker('health', async () => {
          const res = await fetch(`${url}/health`);
          if (res.status === 200) count('health');
          else fail(`health ${res.status}`);
          await sleep(200 + rng.int(200));
        }, 0),
      ]);

      const h = (await (async () => {
        const end = Date.now() + 10_000;
        for (;;) {
          const v = (await (await fetch(`${url}/health`)).json()) as ServerStats;
          if ((v.active === 0 && v.queued === 0) || Date.now() > end) return v;
          await sleep(50);
        }
      })()) as ServerStats;
      collect();
      const heapAfter = process.memoryUsage().heapUsed;
      console.log(
        `soak ${SOAK_MS / 1000} s: ${JSON.stringify(counts)}; server counters ${JSON.stringify(h.requests)}; ` +
          `heap ${(heapBefore / 2 ** 20).toFixed(1)} → ${(heapAfter / 2 ** 20).toFixed(1)} MiB; rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`,
      );
      expect(failures).toEqual([]);
      expect(h).toMatchObject({ status: 'ok', active: 0, queued: 0 });
      expect(h.requests.failed).toBe(0);
      // The server's own accounts agree with what the clients saw (the warm-up request included).
      const c = (k: string): number => counts[k] ?? 0;
      expect(h.requests.completed + h.requests.clientClosed).toBe(1 + c('normal 200') + c('stream 200') + c('stream aborted'));
      expect(h.requests.rejected).toBe(c('normal 429') + c('stream 429'));
      expect(h.requests.refused).toBe(c('malformed 400') + c('malformed 405') + c('malformed 413'));
      // Every kind of traffic ran.
      for (const k of ['normal 200', 'stream 200', 'stream aborted', 'malformed 400', 'slow client closed', 'health']) expect(counts[k] ?? 0, k).toBeGreaterThan(0);
      // Still serving, correctly.
      const after = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 6, temperature: 0 }) });
      expect(((await after.json()) as Json).choices[0].text).toMatch(/^, there was a/);
      expect(heapAfter - heapBefore).toBeLessThan(HEAP_SLACK_BYTES);
    } finally {
      await server.close();
    }
  });
});
