/** End-to-end CLI tests: the built `hipattn` executable, run as a user would (npm test builds first). */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { testSeed } from './gpu-helpers.js';

const run = promisify(execFile);
const cli = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'main.js');
const hipattn = (args: string[]) => run(process.execPath, [cli, ...args], { maxBuffer: 1 << 24 });

describe('hipattn attention-demo', () => {
  it('shows HiP finding the planted far keys that StreamingLLM misses, and writes JSON', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hipattn-'));
    const seed = testSeed('attention-demo');
    const json = join(dir, 'demo.json');
    const { stdout } = await hipattn(['attention-demo', '--length', '2048', '--heads', '2', '--kv-heads', '1', '--head-dim', '32', '--seed', String(seed), '--hip-top-k', '128', '--json', json]);
    expect(stdout).toMatch(/\| method\s+\| time \(s\)/);
    const res = JSON.parse(await readFile(json, 'utf8')) as { rows: { method: string; plantedRecall: number; errorPlanted: number }[]; plantedKeys: number };
    expect(res.plantedKeys).toBeGreaterThan(5);
    const by = Object.fromEntries(res.rows.map((r) => [r.method, r]));
    expect(by.hip!.plantedRecall).toBeGreaterThanOrEqual(0.95);
    expect(by.streaming!.plantedRecall).toBe(0);
    expect(by.hip!.errorPlanted).toBeLessThan(1e-2);
    expect(by.streaming!.errorPlanted).toBeGreaterThan(0.1);
  });

  it('rejects impossible options with a clear message and exit code 2', async () => {
    const err = await hipattn(['attention-demo', '--length', '512', '--hip-top-k', '100', '--hip-block-size-k', '8']).catch((e: { code: number; stderr: string }) => e);
    expect((err as { code: number }).code).toBe(2);
    expect((err as { stderr: string }).stderr).toMatch(/topK \(100\) must be a multiple of blockSizeK \(8\)/);
    const bad = await hipattn(['attention-demo', '--length', 'abc']).catch((e: { code: number; stderr: string }) => e);
    expect((bad as { stderr: string }).stderr).toMatch(/--length must be a non-negative integer, got "abc"/);
  });
});

describe('hipattn generate', () => {
  it('greedy from BOS on stories260K reproduces the documented story (CPU, HiP attention)', async () => {
    const model = join(import.meta.dirname, '..', 'models', 'stories260K', 'stories260K.gguf');
    const { stdout, stderr } = await hipattn(['generate', '--model', model, '--device', 'cpu', '--max-new-tokens', '60', '--temperature', '0', '--attention', 'hip']);
    expect(stdout).toContain('Once upon a time, there was a little girl named Lily. She loved to play outside in the park.');
    expect(stderr).toMatch(/prefill [\d.]+ tok\/s/);
    expect(stderr).toMatch(/decode [\d.]+ tok\/s/);
    expect(stderr).toMatch(/peak RSS \d+ MiB/);
  });

  it('runs the embedded default model with a prompt file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hipattn-'));
    const file = join(dir, 'prompt.txt');
    await import('node:fs/promises').then((fs) => fs.writeFile(file, 'The pass key is 31415. Remember it. 31415 is the pass key.\nWhat is the pass key? The pass key is'));
    const { stdout } = await hipattn(['generate', '--prompt-file', file, '--device', 'cpu', '--max-new-tokens', '4', '--temperature', '0']);
    expect(stdout).toContain('31415');
  });
});
