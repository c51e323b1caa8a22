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
    expect((err as { stderr: string }).stderr).toMatch(/--hip-top-k \(100\) must be a multiple of --hip-block-size-k \(8\)/);
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

describe('hipattn first use: version, usage errors, --device auto', () => {
  const fail = async (args: string[]) => (await hipattn(args).then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e)) as { code: number; stderr: string };

  it('--version prints the package version', async () => {
    const pkg = JSON.parse(await readFile(join(import.meta.dirname, '..', 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) expect((await hipattn([flag])).stdout.trim()).toBe(pkg.version);
  });

  it("a usage error prints the error and where the command's help is, not the whole help (exit 2)", async () => {
    const cases: [string[], RegExp, string][] = [
      [['generate', '--no-such-flag'], /error: unknown option '--no-such-flag'/, "(see 'hipattn generate --help')"],
      [['eval', 'ppl', '--bogus'], /error: unknown option '--bogus'/, "(see 'hipattn eval ppl --help')"],
      [['generate', '--device', 'tpu'], /--device.*tpu/, "(see 'hipattn generate --help')"],
      [['generate', '--max-new-tokens', 'many'], /--max-new-tokens must be a non-negative integer, got "many"/, "(see 'hipattn generate --help')"],
    ];
    for (const [args, message, hint] of cases) {
      const e = await fail(args);
      expect(e.code, args.join(' ')).toBe(2);
      expect(e.stderr, args.join(' ')).toMatch(message);
      expect(e.stderr, args.join(' ')).toContain(hint);
      expect(e.stderr, args.join(' ')).not.toMatch(/Options:|Usage:/);
    }
  });

  it('option errors name the flags, not the library fields', async () => {
    const stories = join(import.meta.dirname, '..', 'models', 'stories260K', 'stories260K.gguf');
    const base = ['generate', '--model', stories, '--device', 'cpu', '--prompt', 'Once'];
    const cases: [string[], RegExp][] = [
      [['--hip-top-k', '100', '--hip-block-size-k', '8'], /--hip-top-k \(100\) must be a multiple of --hip-block-size-k \(8\)/],
      [['--sliding-window', '4', '--refresh-interval', '8'], /--sliding-window \(4\) must be ≥ --refresh-interval \(8\)/],
      [['--streaming-window', '0'], /--streaming-window must be an integer ≥ 1, got 0/],
      [['--context-length', '0'], /--context-length must be a positive integer, got "0"/],
      [['--context-length', '16', '--max-new-tokens', '64'], /\+ --max-new-tokens \(64\) exceeds the context length 16; load the model with a larger --context-length/],
      [['--temperature', '-1'], /--temperature must be a finite number ≥ 0, got -1/],
      [['--top-p', '2'], /--top-p must be in \(0, 1\], got 2/],
    ];
    for (const [args, message] of cases) {
      const e = await fail([...base, ...args]);
      expect(e.code, args.join(' ')).toBe(2);
      expect(e.stderr, args.join(' ')).toMatch(message);
      expect(e.stderr, args.join(' ')).not.toMatch(/(?<!-)\b(topK|blockSizeK|slidingWindow|refreshInterval|contextLength|maxNewTokens|temperature|topP)\b/);
    }
  });

  it('--device auto: no Dawn warnings on stderr, and the CPU where the only adapter is a software one', async () => {
    const probe = JSON.parse((await run(process.execPath, [join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'adapter-probe-main.js')])).stdout) as { adapter: { vendor: string; architecture: string; device: string; description: string; isFallbackAdapter: boolean } | null };
    const { isSoftwareAdapter } = await import('../src/gpu/device.js');
    const software = probe.adapter === null || isSoftwareAdapter({ ...probe.adapter, subgroupMinSize: 0, subgroupMaxSize: 0, subgroupMatrixConfigs: [] });
    const stories = join(import.meta.dirname, '..', 'models', 'stories260K', 'stories260K.gguf');
    const { stdout, stderr } = await hipattn(['generate', '--model', stories, '--device', 'auto', '--prompt', 'Once', '--max-new-tokens', '8', '--temperature', '0']);
    expect(stdout).toContain('upon a time');
    expect(stderr).not.toMatch(/artificially reduced|^Warning:/m);
    expect(stderr).toMatch(software ? /^\[CPU \(float32/m : /^\[WebGPU /m);
  });
});
