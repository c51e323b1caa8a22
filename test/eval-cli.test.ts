/**
 * End-to-end tests of `hipattn eval …` and `hipattn demo`: the built CLI (npm test builds first)
 * on stories260K and on the embedded hip-testbed-mini, with short settings; the JSON checked
 * against its documented shape, the charts checked to be valid SVG/PNG.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..');
const cli = join(root, 'dist', 'src', 'cli', 'main.js');
const stories = join(root, 'models', 'stories260K', 'stories260K.gguf');
const prose = join(root, 'data', 'northanger-abbey-ch1-7.txt');
const hipattn = (args: string[]) => run(process.execPath, [cli, ...args], { maxBuffer: 1 << 24 });
/** Small HiP / StreamingLLM settings, so that short prompts exercise sparse attention. */
const SMALL = ['--hip-top-k', '64', '--hip-block-size-q', '16', '--sliding-window', '32', '--sink-tokens', '4', '--dense-layers', '1', '--streaming-window', '96', '--streaming-sink-tokens', '4'];

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hipattn-eval-'));
});

type Json = Record<string, unknown>;

/** The documented top level of every eval JSON. */
function checkDocument(doc: Json, task: string): void {
  expect(Object.keys(doc)).toEqual(expect.arrayContaining(['task', 'model', 'options', 'date', 'device', 'rows', 'timings', 'incomplete']));
  expect(doc.task).toBe(task);
  expect(typeof doc.model).toBe('string');
  expect(typeof doc.options).toBe('object');
  expect(new Date(doc.date as string).toISOString()).toBe(doc.date);
  expect(doc.device).toMatch(/\S/);
  expect(Array.isArray(doc.rows)).toBe(true);
}

function checkRetrievalRows(rows: Json[]): void {
  for (const r of rows) {
    expect(Object.keys(r).sort()).toEqual(['accuracy', 'attention', 'correct', 'depth', 'length', 'trials']);
    expect(Number.isInteger(r.length)).toBe(true);
    expect(r.depth).toBeGreaterThanOrEqual(0);
    expect(r.depth).toBeLessThanOrEqual(1);
    expect(['dense', 'hip', 'streaming']).toContain(r.attention);
    expect(Number.isInteger(r.trials) && Number.isInteger(r.correct)).toBe(true);
    expect(r.correct).toBeLessThanOrEqual(r.trials as number);
    expect(r.accuracy).toBeCloseTo((r.correct as number) / (r.trials as number), 12);
  }
}

async function checkSvg(file: string): Promise<string> {
  const svg = await readFile(file, 'utf8');
  expect(svg.startsWith('<svg')).toBe(true);
  expect(svg.trim().endsWith('</svg>')).toBe(true);
  expect(svg.length).toBeGreaterThan(2000);
  return svg;
}

describe('hipattn eval ppl', () => {
  it('stories260K: rows per (file, context, method), every token scored; HiP covering the whole window equals dense', async () => {
    const json = join(dir, 'ppl.json');
    const chart = join(dir, 'ppl.svg');
    const { stdout } = await hipattn(['eval', 'ppl', '--model', stories, '--device', 'cpu', '--file', prose, '--context', '64,128', '--max-windows', '2', '--attention', 'dense,hip,streaming', '--streaming-window', '32', '--json', json, '--chart', chart]);
    expect(stdout).toMatch(/\| file\s+\| context \| tokens \| ppl dense \| ppl hip \| ppl streaming \| hip vs dense \| streaming vs dense \|/);
    const doc = JSON.parse(await readFile(json, 'utf8')) as Json;
    checkDocument(doc, 'ppl');
    expect(doc.incomplete).toBe(false);
    const rows = doc.rows as Json[];
    expect(rows).toHaveLength(6);
    for (const r of rows) {
      expect(Object.keys(r).sort()).toEqual(['attention', 'context', 'file', 'nll', 'ppl', 'tokens']);
      expect(r.file).toBe('northanger-abbey-ch1-7.txt');
      expect(r.tokens).toBe(2 * (r.context as number));
      expect(r.ppl).toBeCloseTo(Math.exp(r.nll as number), 9);
      expect(r.nll).toBeGreaterThan(0.5);
      expect(r.nll).toBeLessThan(7);
    }
    const get = (m: string, c: number) => rows.find((r) => r.attention === m && r.context === c)!;
    // at ≤ 128 tokens HiP's defaults (sink 16 + top-k 512 + window 256) cover every key: exactly dense
    expect(get('hip', 128).nll).toBeCloseTo(get('dense', 128).nll as number, 5);
    // a 32-token window loses context: worse than dense at 128
    expect(get('streaming', 128).nll).toBeGreaterThan(get('dense', 128).nll as number);
    await checkSvg(chart);
  });

  it('hip-testbed-mini: one 256-token window with sparse HiP', async () => {
    const json = join(dir, 'ppl-mini.json');
    await hipattn(['eval', 'ppl', '--device', 'cpu', '--file', prose, '--context', '256', '--max-windows', '1', '--attention', 'dense,hip', ...SMALL, '--json', json]);
    const doc = JSON.parse(await readFile(json, 'utf8')) as Json;
    checkDocument(doc, 'ppl');
    const rows = doc.rows as Json[];
    expect(rows.map((r) => r.attention)).toEqual(['dense', 'hip']);
    // the model card's DEV perplexity of this novel is ~44 (at 1k–8k); a 256-token window is a bit worse
    expect(rows[0]!.ppl).toBeGreaterThan(15);
    expect(rows[0]!.ppl).toBeLessThan(150);
    expect(Math.abs((rows[1]!.ppl as number) / (rows[0]!.ppl as number) - 1)).toBeLessThan(0.1);
  });
});

describe('hipattn eval passkey', () => {
  it('hip-testbed-mini, plain layout: dense finds the passkey; JSON, per-trial outputs and PNG chart', async () => {
    const json = join(dir, 'passkey.json');
    const chart = join(dir, 'passkey.png');
    const { stdout } = await hipattn(['eval', 'passkey', '--device', 'cpu', '--lengths', '512', '--depths', '0,1', '--trials', '1', '--seed', '3', '--attention', 'dense,hip,streaming', ...SMALL, '--json', json, '--chart', chart]);
    expect(stdout).toMatch(/\| length \| depth\s+\| dense\s+\| hip\s+\| streaming\s+\|/);
    expect(stdout).toMatch(/\| attention \| accuracy \| correct\/trials \| time \(s\) \| tokens\/s \|/);
    const doc = JSON.parse(await readFile(json, 'utf8')) as Json;
    checkDocument(doc, 'passkey');
    const rows = doc.rows as Json[];
    checkRetrievalRows(rows);
    expect(rows).toHaveLength(6);
    expect(rows.filter((r) => r.attention === 'dense').every((r) => r.accuracy === 1)).toBe(true);
    const outputs = doc.outputs as { answer: string; output: string; correct: boolean }[];
    expect(outputs).toHaveLength(6);
    for (const o of outputs) expect(o.correct).toBe(o.output.match(/\d+/)?.[0] === o.answer);
    expect((doc.timings as Json[]).map((t) => t.attention)).toEqual(['dense', 'hip', 'streaming']);
    const png = await readFile(chart);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(png.length).toBeGreaterThan(10_000);
  });

  it('stories260K, landmark layout (no chat template): runs and writes the documented rows', async () => {
    const json = join(dir, 'passkey-landmark.json');
    const chart = join(dir, 'passkey-landmark.svg');
    await hipattn(['eval', 'passkey', '--model', stories, '--device', 'cpu', '--format', 'landmark', '--lengths', '256,384', '--depths', '0,0.5,1', '--trials', '2', '--attention', 'dense,streaming', '--streaming-window', '64', '--json', json, '--chart', chart]);
    const doc = JSON.parse(await readFile(json, 'utf8')) as Json;
    checkDocument(doc, 'passkey');
    checkRetrievalRows(doc.rows as Json[]);
    expect(doc.rows).toHaveLength(12);
    expect((doc.options as Json).format).toBe('landmark');
    const svg = await checkSvg(chart);
    expect(svg).toContain('StreamingLLM');
  });
});

describe('hipattn eval kv and niah', () => {
  it('kv on stories260K', async () => {
    const json = join(dir, 'kv.json');
    const chart = join(dir, 'kv.svg');
    await hipattn(['eval', 'kv', '--model', stories, '--device', 'cpu', '--lengths', '256', '--depths', '0.5', '--trials', '2', '--json', json, '--chart', chart]);
    const doc = JSON.parse(await readFile(json, 'utf8')) as Json;
    checkDocument(doc, 'kv');
    checkRetrievalRows(doc.rows as Json[]);
    expect(doc.rows).toHaveLength(3);
    await checkSvg(chart);
  });

  it('niah on hip-testbed-mini', async () => {
    const json = join(dir, 'niah.json');
    await hipattn([
      'eval', 'niah', '--device', 'cpu', '--lengths', '384', '--depths', '0.5', '--trials', '1', '--attention', 'dense', '--max-new-tokens', '8',
      '--needle', 'The secret ingredient of the pie is cinnamon.', '--question', 'What is the secret ingredient of the pie?', '--answer', 'cinnamon',
      '--json', json,
    ]);
    const doc = JSON.parse(await readFile(json, 'utf8')) as Json;
    checkDocument(doc, 'niah');
    checkRetrievalRows(doc.rows as Json[]);
    expect((doc.options as Json).needle).toBe('The secret ingredient of the pie is cinnamon.');
  });

  it('refuses bad options with exit code 2', async () => {
    const bad = async (args: string[]) => (await hipattn(args).catch((e: { code: number; stderr: string }) => e)) as { code: number; stderr: string };
    let e = await bad(['eval', 'passkey', '--model', stories, '--depths', '0,1.5']);
    expect(e.code).toBe(2);
    expect(e.stderr).toMatch(/--depths takes numbers in \[0, 1\]/);
    e = await bad(['eval', 'kv', '--model', stories, '--lengths', '128', '--chart', 'x.jpg']);
    expect(e.code).toBe(2);
    expect(e.stderr).toMatch(/--chart must end in .svg or .png/);
    e = await bad(['eval', 'ppl', '--model', stories, '--attention', 'dense,flash']);
    expect(e.code).toBe(2);
    expect(e.stderr).toMatch(/--attention takes dense, hip, streaming/);
    e = await bad(['eval', 'ppl', '--model', stories]);
    expect(e.stderr).toMatch(/give at least one --file/);
    // a value outside a flag's choices (commander's own check) exits 2 as well
    e = await bad(['eval', 'passkey', '--model', stories, '--shifted-blocks', 'maybe']);
    expect(e.code).toBe(2);
    expect(e.stderr).toMatch(/--shifted-blocks .*'maybe' is invalid/);
  });
});

describe('interrupting an evaluation', () => {
  it('SIGINT keeps the finished cells in the JSON, prints them and exits 130', async () => {
    const json = join(dir, 'interrupted.json');
    const child = spawn(process.execPath, [cli, 'eval', 'passkey', '--model', stories, '--device', 'cpu', '--lengths', '128', '--depths', '0,0.25,0.5,0.75,1', '--trials', '40', '--json', json], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (existsSync(json) && ((JSON.parse(await readFile(json, 'utf8')) as Json).rows as Json[]).length >= 1) break;
      if (Date.now() > deadline) throw new Error('no cell finished in time');
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    const doc = JSON.parse(await readFile(json, 'utf8')) as Json;
    checkDocument(doc, 'passkey');
    expect(doc.incomplete).toBe(true);
    const rows = doc.rows as Json[];
    checkRetrievalRows(rows);
    expect(rows.length).toBeGreaterThanOrEqual(1);
    expect(rows.length).toBeLessThan(15);
    expect(rows.every((r) => r.trials === 40)).toBe(true);
    expect(stdout).toMatch(/interrupted: \d+ finished cells? kept/);
  });
});

describe('hipattn demo and eval recall', () => {
  it('demo: table with accuracy and time per method, chart written', async () => {
    const chart = join(dir, 'demo', 'demo.svg');
    const small = ['--hip-top-k', '64', '--sliding-window', '64', '--sink-tokens', '16', '--streaming-window', '32'];
    const { stdout } = await hipattn(['demo', '--model', stories, '--device', 'cpu', '--lengths', '256', '--depths', '0.5', '--trials', '1', ...small, '--chart', chart]);
    expect(stdout).toMatch(/\| attention \| accuracy \| correct\/trials \| time \(s\) \| tokens\/s \|/);
    for (const m of ['dense', 'hip', 'streaming']) expect(stdout).toMatch(new RegExp(`\\| ${m}\\s+\\|\\s+[\\d.]+ %`));
    await checkSvg(chart);
    // each panel's second line: the method's time and the keys its last query reads
    // (dense: all 256; HiP: 16 sink + 64 top-k + 64 window; StreamingLLM: 16 sink + 32 window)
    const svg = await readFile(chart, 'utf8');
    for (const keys of [256, 144, 48]) expect(svg).toMatch(new RegExp(`\\d+\\.\\d s · ${keys} keys/query at 256`));
    expect(stdout).toMatch(/\| tokens\/s \| keys\/query at 256 \|/);
    for (const [m, keys] of [['dense', 256], ['hip', 144], ['streaming', 48]] as const) expect(stdout).toMatch(new RegExp(`\\| ${m}\\s+\\|.*\\|\\s+${keys} \\|$`, 'm'));
  });

  it('recall: one row per layer and head with recall and coverage in [0, 1]', async () => {
    const json = join(dir, 'recall.json');
    const { stdout } = await hipattn(['eval', 'recall', '--model', stories, '--length', '256', ...SMALL, '--json', json]);
    expect(stdout).toMatch(/\| layer \| head \| runtime \| query blocks \| mask recall \| mass HiP \|/);
    const doc = JSON.parse(await readFile(json, 'utf8')) as { rows: Json[] };
    expect(doc.rows).toHaveLength(5 * 8);
    for (const r of doc.rows) {
      for (const k of ['recall', 'massHip', 'massTopK', 'massStreaming', 'needleHip', 'needleTopK']) {
        expect(r[k]).toBeGreaterThanOrEqual(0);
        expect(r[k]).toBeLessThanOrEqual(1 + 1e-9);
      }
      expect(r.queryBlocks).toBeGreaterThan(0);
    }
    expect(doc.rows.filter((r) => r.layer === 0).every((r) => r.runtime === 'dense')).toBe(true);
  });
});
