/**
 * Tokenization in a worker thread (Node, from the built package), so that tokenizing a long
 * prompt does not stop the event loop: a server keeps answering while a 100k-character prompt
 * is being read. The worker builds the same tokenizer from `TextTokenizer.recipe`.
 * `TokenizeWorker.start` returns null where that is not possible — in a browser, for a
 * tokenizer without a recipe, or when running from the TypeScript sources (no compiled worker
 * script next to this module) — and callers then tokenize on their own thread.
 */
import { HipAttnError, type HipAttnErrorCode } from '../errors.js';
import type { EncodeOptions, TextTokenizer } from '../model/tokenizer.js';

type WorkerLike = {
  postMessage(m: unknown): void;
  on(event: 'message', f: (m: Reply) => void): void;
  on(event: 'error', f: (e: Error) => void): void;
  ref(): void;
  unref(): void;
  terminate(): Promise<number>;
};
type Reply = { id: number; ids?: Uint32Array; error?: { code: HipAttnErrorCode; message: string } };

export class TokenizeWorker {
  private next = 0;
  private readonly pending = new Map<number, { resolve: (ids: number[]) => void; reject: (e: Error) => void }>();
  private failed: Error | undefined;

  private constructor(private readonly worker: WorkerLike) {
    worker.on('message', (m) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) this.worker.unref();
      if (m.error) p.reject(new HipAttnError(m.error.code, m.error.message));
      else p.resolve(Array.from(m.ids!));
    });
    worker.on('error', (e) => {
      this.failed = new HipAttnError('TOKENIZER', `the tokenizer worker failed: ${e.message}`, { cause: e });
      for (const p of this.pending.values()) p.reject(this.failed);
      this.pending.clear();
    });
    // An idle worker never keeps the process alive (a busy one does: see encode).
    worker.unref();
  }

  /** A worker for this tokenizer, or null where tokenizing off the thread is not possible here. */
  static async start(tokenizer: TextTokenizer): Promise<TokenizeWorker | null> {
    if (!tokenizer.recipe || typeof process === 'undefined' || !process.versions?.node) return null;
    // Specifiers in variables: bundlers for the browser leave these Node modules alone.
    const threads = 'node:worker_threads';
    const fs = 'node:fs';
    const script = new URL('./tokenize-worker-main.js', import.meta.url);
    const { existsSync } = (await import(fs)) as typeof import('node:fs');
    if (script.protocol !== 'file:' || !existsSync(script)) return null;
    const { Worker } = (await import(threads)) as typeof import('node:worker_threads');
    return new TokenizeWorker(new Worker(script, { workerData: { recipe: tokenizer.recipe } }) as unknown as WorkerLike);
  }

  encode(text: string, options?: EncodeOptions): Promise<number[]> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ id, text, ...(options ? { options } : {}) });
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
    const closed = new HipAttnError('TOKENIZER', 'the tokenizer worker was closed');
    for (const p of this.pending.values()) p.reject(closed);
    this.pending.clear();
  }
}
