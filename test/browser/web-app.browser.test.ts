/**
 * The browser app end to end: build web/ with Vite (into web/dist, what `hipattn serve --ui`
 * serves), start `hipattn serve --ui` (the built CLI; API and app from one process on
 * 127.0.0.1, the embedded hip-testbed-mini's files at /model/), open the app in headless
 * Chromium (SwiftShader WebGPU: no shader-f16, so the f32 path), load the model from the
 * server's URL, generate a few tokens on WebGPU with HiP, run the visualiser for a layer past
 * the dense ones, and check that it draws a non-empty HiP selection with a recall figure.
 * Screenshots go to test-artifacts/ (and, with HIPATTN_DOCS_SCREENSHOT=FILE, the visualiser
 * section to FILE, e.g. docs/visualiser.png).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { build } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loudNotice, webgpuRequired } from '../gpu-helpers.js';
import { CHROMIUM_ARGS, findChromium } from './harness.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const ARTIFACTS = path.join(ROOT, 'test-artifacts');

/** A short passkey prompt (≈ 230 tokens): long enough that HiP's tree search has to choose with the short-prompt preset. */
const PROMPT =
  'No one who had ever seen Catherine Morland in her infancy would have supposed her born to be an heroine. Her situation in life, ' +
  'the character of her father and mother, her own person and disposition, were all equally against her. Her father was a clergyman, ' +
  'without being neglected, or poor, and a very respectable man, though his name was Richard. The pass key is 71432. Remember it. ' +
  '71432 is the pass key. He had a considerable independence besides two good livings, and he was not in the least addicted to locking ' +
  'up his daughters. Her mother was a woman of useful plain sense, with a good temper, and, what is more remarkable, with a good ' +
  'constitution. She had three sons before Catherine was born; and instead of dying in bringing the latter into the world, as anybody ' +
  'might expect, she still lived on, lived to have six children more, to see them growing up around her, and to enjoy excellent health ' +
  'herself. A family of ten children will be always called a fine family, where there are heads and arms and legs enough for the number.' +
  '\nWhat is the pass key? The pass key is';

interface Server {
  url: string;
  proc: ChildProcess;
  stderr: () => string;
}

function startServer(): Promise<Server> {
  const proc = spawn(process.execPath, [CLI, 'serve', '--ui', '--device', 'cpu', '--port', '0', '--quiet'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hipattn serve --ui did not start in 90 s; stderr:\n${err}`)), 90_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1]!, proc, stderr: () => err });
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`hipattn serve --ui exited with ${code}; stderr:\n${err}`));
    });
  });
}

let server: Server | undefined;
let context: BrowserContext | undefined;
let page: Page | undefined;
let profile: string | undefined;
const logs: string[] = [];
let skipReason: string | null = null;

beforeAll(async () => {
  const t0 = performance.now();
  await build({ configFile: path.join(ROOT, 'web', 'vite.config.ts'), logLevel: 'warn' });
  console.log(`[web app] vite build: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const exe = findChromium();
  if (!exe) {
    skipReason = "Chromium not found: install Debian's chromium (/usr/bin/chromium) or set HIPATTN_CHROMIUM";
  } else {
    server = await startServer();
    profile = mkdtempSync(path.join(tmpdir(), 'hipattn-web-'));
    context = await chromium.launchPersistentContext(profile, { executablePath: exe, headless: true, args: [...CHROMIUM_ARGS], viewport: { width: 1280, height: 900 }, timeout: 120_000 });
    page = await context.newPage();
    page.on('console', (m) => logs.push(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`[pageerror] ${e.stack ?? e.message}`));
    await page.goto(server.url, { timeout: 60_000 });
    const gpu = await page.waitForFunction(() => document.body.dataset.gpu, null, { timeout: 60_000 }).then((h) => h.jsonValue());
    if (gpu !== 'webgpu') skipReason = `the app's page got no WebGPU adapter: ${await page.locator('#device').textContent()}`;
  }
  if (skipReason) {
    if (webgpuRequired()) throw new Error(`HIPATTN_REQUIRE_WEBGPU=1 but browser WebGPU is unavailable: ${skipReason}`);
    loudNotice(['NO BROWSER WEBGPU: THE WEB APP END-TO-END TEST IS SKIPPED.', skipReason, 'Set HIPATTN_REQUIRE_WEBGPU=1 to make this a failure.']);
  }
}, 240_000);

afterAll(async () => {
  await context?.close().catch(() => undefined);
  if (profile) rmSync(profile, { recursive: true, force: true });
  if (server && server.proc.exitCode === null) {
    server.proc.kill('SIGTERM');
    await new Promise((r) => server!.proc.once('exit', r));
  }
});

/** Waits for `document.body.dataset[key]` to become `want` (fails early on 'error', with the page's messages). */
async function waitState(key: string, want: string, timeout: number): Promise<void> {
  const got = await page!
    .waitForFunction(([k, w]) => ['error', w].includes(document.body.dataset[k!] ?? '') && document.body.dataset[k!], [key, want] as const, { timeout, polling: 250 })
    .then((h) => h.jsonValue())
    .catch(async (e: unknown) => {
      throw new Error(`waiting for ${key}=${want}: ${(e as Error).message}\nstatus: ${await page!.locator('body').innerText().catch(() => '?')}\nlog:\n${logs.join('\n')}`);
    });
  if (got !== want) {
    const text = await page!.locator('body').innerText();
    throw new Error(`${key} ended in ${String(got)}:\n${text.slice(0, 3000)}\nlog:\n${logs.join('\n')}`);
  }
}

describe('browser app (hipattn serve --ui, headless Chromium)', () => {
  it('serves the API and the app from one process, with the model files at /model/', async () => {
    if (!server) return;
    const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] };
    expect(models.data[0]!.id).toBe('hip-testbed-mini');
    const files = (await (await fetch(`${server.url}/model/files.json`)).json()) as { name: string; files: string[] };
    expect(files.files).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.json']));
    expect(files.files).not.toContain('README.md');
    expect((await fetch(`${server.url}/model/README.md`)).status).toBe(404);
    const html = await (await fetch(`${server.url}/`)).text();
    expect(html).toContain('hipattn');
  });

  it('loads hip-testbed-mini from the URL, generates on WebGPU with HiP, and the visualiser draws HiP vs exact top-k', async (ctx) => {
    if (skipReason) ctx.skip();
    const p = page!;
    const t0 = performance.now();
    const lap = (what: string) => console.log(`[web app] ${what}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // Options first (so that the model loads once): short-prompt preset, a short passkey prompt, 4 tokens.
    await p.selectOption('#preset', 'short');
    // SwiftShader is a software adapter: 'auto' would take the CPU there
    await p.selectOption('#device-select', 'webgpu');
    await p.fill('#prompt', PROMPT);
    await p.fill('#max-new', '4');
    // The app found the server's model at ./model/ and filled in its URL.
    await p.waitForFunction(() => (document.getElementById('url-input') as HTMLInputElement).value.endsWith('/model/'), null, { timeout: 30_000 });
    await p.click('#url-load');
    await waitState('model', 'ready', 120_000);
    lap('model loaded');
    expect(await p.locator('#load-status').innerText()).toMatch(/WebGPU .*f32/);

    await p.click('#generate');
    await waitState('gen', 'done', 180_000);
    lap('generated');
    const stats = await p.locator('#gen-stats').innerText();
    console.log(`[web app] ${stats.replace(/\s+/g, ' ')} | output: ${JSON.stringify(await p.locator('#output .gen').innerText())}`);
    expect(stats).toMatch(/prefill [0-9.]+ tok\/s/);
    expect(stats).toMatch(/decode [0-9.]+ tok\/s/);
    expect(stats).toMatch(/memory [0-9.]+ MB/);
    expect(stats).toMatch(/attention hip/);
    expect(Number(await p.locator('#gen-stats').getAttribute('data-decode-tokens'))).toBeGreaterThan(0);

    await p.click('#analyse');
    await waitState('vis', 'ready', 180_000);
    lap('analysed');
    // Layer 4 (past the 3 dense layers), head 1, and a query near the end of the prompt: click its token.
    await p.selectOption('#vis-layer', '4');
    await p.selectOption('#vis-head', '1');
    const count = await p.locator('#vis-tokens span').count();
    expect(count).toBeGreaterThan(150);
    const q = count - 12;
    await p.locator(`#vis-tokens span[data-i="${q}"]`).click();
    await p.waitForFunction((want) => document.querySelector('#vis-figures .headline')?.textContent?.startsWith(want), `Layer 4 · head 1 · query ${q} `, { timeout: 60_000 });
    const fig = await p.locator('#vis-figures').evaluate((el: HTMLElement) => ({ ...el.dataset, text: el.innerText }) as Record<string, string | undefined> & { text: string });
    console.log(`[web app] visualiser: ${fig.text.replace(/\s+/g, ' ')}`);
    expect(Number(fig.hipSelected)).toBeGreaterThan(0);
    expect(Number(fig.hipBlocks)).toBeGreaterThan(0);
    const recall = Number(fig.recall);
    expect(recall).toBeGreaterThanOrEqual(0);
    expect(recall).toBeLessThanOrEqual(1);
    expect(await p.locator('#vis-recall').innerText()).toMatch(/^recall \d+\.\d %$/);
    expect(await p.locator('#vis-mass').innerText()).toMatch(/^mass \d+\.\d %$/);
    expect(fig.text).toMatch(/HiP's tree search chose \d+ of \d+ candidate key blocks/);
    // The per-layer/head summary and the drawings are there.
    expect(await p.locator('#vis-summary td[data-layer="4"][data-head="1"]').innerText()).toMatch(/\d+ %/);
    expect(await p.locator('#vis-tokens span[style*="background"]').count()).toBeGreaterThan(0);
    // Every method renders; come back to HiP for the screenshot.
    for (const m of ['streaming', 'dense', 'hip']) {
      await p.click(`#vis-method button[data-method="${m}"]`);
      await p.waitForFunction((want) => document.querySelector('#vis-figures tr.on td')?.textContent === want, m === 'hip' ? 'HiP' : m === 'dense' ? 'Dense' : 'StreamingLLM', { timeout: 30_000 });
    }
    await p.waitForTimeout(300);
    mkdirSync(ARTIFACTS, { recursive: true });
    await p.screenshot({ path: path.join(ARTIFACTS, 'web-app.png'), fullPage: true });
    await p.locator('#vis-section').screenshot({ path: path.join(ARTIFACTS, 'web-visualiser.png') });
    const docs = process.env.HIPATTN_DOCS_SCREENSHOT;
    if (docs) await p.locator('#vis-section').screenshot({ path: path.resolve(ROOT, docs) });
    lap('screenshots in test-artifacts/');
    expect(logs.filter((l) => l.startsWith('[pageerror]'))).toEqual([]);
  });

  it('loads a local .gguf through the file picker, generates on the CPU and analyses it', async (ctx) => {
    if (skipReason) ctx.skip();
    const p = page!;
    await p.selectOption('#device-select', 'cpu');
    await p.setInputFiles('#file-input', path.join(ROOT, 'models', 'stories260K', 'stories260K.gguf'));
    await waitState('model', 'ready', 60_000);
    expect(await p.locator('#load-status').innerText()).toMatch(/Ready: stories260K\.gguf .*CPU/);
    await p.fill('#prompt', 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. '.repeat(6));
    await p.fill('#max-new', '8');
    await p.click('#generate');
    await waitState('gen', 'done', 60_000);
    expect(Number(await p.locator('#gen-stats').getAttribute('data-decode-tokens'))).toBeGreaterThan(0);
    expect(await p.locator('#gen-stats').innerText()).toMatch(/decode [0-9.]+ tok\/s/);
    await p.click('#analyse');
    await waitState('vis', 'ready', 60_000);
    const layers = await p.locator('#vis-layer option').count();
    expect(await p.locator('#vis-summary tbody tr').count()).toBe(layers);
    expect(Number(await p.locator('#vis-figures').getAttribute('data-hip-selected'))).toBeGreaterThan(0);
    expect(logs.filter((l) => l.startsWith('[pageerror]'))).toEqual([]);
  });

  it("loads a model folder's files dropped on the drop zone", async (ctx) => {
    if (skipReason) ctx.skip();
    const p = page!;
    // A drop of the files (fetched from the server into the page, as a user's drag would carry them).
    await p.evaluate(async () => {
      const { files } = (await (await fetch('model/files.json')).json()) as { files: string[] };
      const dt = new DataTransfer();
      for (const f of files) dt.items.add(new File([await (await fetch(`model/${f}`)).blob()], f));
      document.getElementById('drop-zone')!.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await waitState('model', 'ready', 120_000);
    expect(await p.locator('#load-status').innerText()).toMatch(/Ready: local model .*13\.\d MB of files/);
    expect(await p.locator('#model-info').innerText()).toMatch(/6 layers · 4 heads \(1 KV\)/);
  });
});
