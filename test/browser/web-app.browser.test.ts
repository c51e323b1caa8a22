/**
 * The browser app end to end: build web/ with Vite (into web/dist, what `hipattn serve --ui`
 * serves), start `hipattn serve --ui` (the built CLI; API and app from one process on
 * 127.0.0.1, the embedded hip-testbed-mini's files at /model/), open the app in headless
 * Chromium (SwiftShader WebGPU: no shader-f16, so the f32 path), load the model from the
 * server's URL, make the passkey example (its planted key shown), generate a few tokens on
 * WebGPU with HiP (the prefill progress bar moving chunk by chunk; the answer marked right or
 * wrong as the test's own comparison says), run the visualiser for a layer past the dense ones,
 * and check that it draws a non-empty HiP selection, marks the pass key's tokens where a
 * prefix-decoding reference puts them, and shows the figures of the method selected. Then
 * local files on the CPU, a drop, and `serve --api-key` (the app asks for the key).
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
import type { OpenedModel } from '../../src/model/load.js';
import { openModelPath } from '../../src/model/node-load.js';
import { loudNotice, webgpuRequired } from '../gpu-helpers.js';
import { referenceNeedleTokens } from '../needle-reference.js';
import { CHROMIUM_ARGS, findChromium } from './harness.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const ARTIFACTS = path.join(ROOT, 'test-artifacts');

interface Server {
  url: string;
  proc: ChildProcess;
  stderr: () => string;
}

function startServer(extraArgs: string[] = []): Promise<Server> {
  const proc = spawn(process.execPath, [CLI, 'serve', '--ui', '--device', 'cpu', '--port', '0', '--quiet', ...extraArgs], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
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
/** `serve --api-key` (the last test). */
let keyServer: Server | undefined;
/** hip-testbed-mini's tokenizer, for the test's own view of the prompt. */
let mini: OpenedModel | undefined;
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

async function stopServer(s: Server | undefined): Promise<void> {
  if (s && s.proc.exitCode === null) {
    s.proc.kill('SIGTERM');
    await new Promise((r) => s.proc.once('exit', r));
  }
}

afterAll(async () => {
  await context?.close().catch(() => undefined);
  if (profile) rmSync(profile, { recursive: true, force: true });
  await stopServer(server);
  await stopServer(keyServer);
  await mini?.store.close();
});

/** Records the prefill bar's (done, total) at every change, until prefillReports() reads them. */
async function recordPrefill(p: Page): Promise<void> {
  await p.evaluate(() => {
    const bar = document.getElementById('gen-bar')!;
    const seen: [number, number][] = [];
    (window as unknown as { prefillReports: [number, number][] }).prefillReports = seen;
    new MutationObserver(() => {
      if (bar.dataset.total) seen.push([Number(bar.dataset.done), Number(bar.dataset.total)]);
    }).observe(bar, { attributes: true, attributeFilter: ['data-done', 'data-total'] });
  });
}

/**
 * Checks the recorded prefill reports: one per chunk of one size (the last one shorter), all of
 * the prompt's `total` tokens, ending at total, with at least one in between (the bar moved).
 */
async function checkPrefillReports(p: Page, total: number): Promise<number[]> {
  const reports = await p.evaluate(() => (window as unknown as { prefillReports: [number, number][] }).prefillReports);
  const done = reports.map(([d]) => d);
  expect(reports.every(([, t]) => t === total)).toBe(true);
  expect(done.length).toBeGreaterThan(1);
  expect(done.at(-1)).toBe(total);
  const chunk = done[0]!;
  expect(done).toEqual(Array.from({ length: Math.ceil(total / chunk) }, (_, i) => Math.min(total, (i + 1) * chunk)));
  expect(await p.locator('#gen-bar').evaluate((el: HTMLElement) => el.style.width)).toBe('100%');
  return done;
}

/** The planted key of a passkey prompt, found by the test itself. */
function plantedKey(prompt: string): string {
  const m = /The pass key is (\d+)\. Remember it\. \1 is the pass key\./.exec(prompt);
  if (!m) throw new Error(`no passkey needle in the prompt: ${prompt.slice(0, 200)}…`);
  return m[1]!;
}

/** The mark must say what the test's own comparison says (the first number generated = the key). */
async function checkPasskeyMark(p: Page, key: string): Promise<boolean> {
  const generated = (await p.locator('#output .gen').textContent()) ?? '';
  const right = (/\d+/.exec(generated)?.[0] ?? null) === key;
  expect(await p.locator('#passkey').getAttribute('data-correct')).toBe(String(right));
  expect(await p.locator('#passkey-mark').innerText()).toMatch(right ? /^✓/ : /^✗/);
  console.log(`[web app] passkey ${key}, generated ${JSON.stringify(generated)}: ${right ? 'right' : 'wrong'}`);
  return right;
}

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

  it('loads hip-testbed-mini from the URL, generates on WebGPU with HiP and a prefill progress bar, marks the passkey answer, and the visualiser draws HiP vs exact top-k with the needle', async (ctx) => {
    if (skipReason) ctx.skip();
    const p = page!;
    const t0 = performance.now();
    const lap = (what: string) => console.log(`[web app] ${what}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    mini = await openModelPath(path.join(ROOT, 'models', 'hip-testbed-mini'));
    // Options first (so that the model loads once): short-prompt preset, 6 tokens.
    await p.selectOption('#preset', 'short');
    await p.fill('#max-new', '6');
    // SwiftShader is a software adapter: 'auto' would take the CPU there
    await p.selectOption('#device-select', 'webgpu');
    // The app found the server's model at ./model/ and filled in its URL.
    await p.waitForFunction(() => (document.getElementById('url-input') as HTMLInputElement).value.endsWith('/model/'), null, { timeout: 30_000 });
    await p.click('#url-load');
    await waitState('model', 'ready', 120_000);
    lap('model loaded');
    expect(await p.locator('#load-status').innerText()).toMatch(/WebGPU .*f32/);

    // A passkey example of ≈ 400 tokens (sized with the model's tokenizer: two WebGPU prefill chunks of 256); its key is shown.
    await p.fill('#passkey-tokens', '400');
    await p.click('#example-passkey');
    const prompt = await p.inputValue('#prompt');
    const key = plantedKey(prompt);
    expect(await p.locator('#passkey').isVisible()).toBe(true);
    expect(await p.locator('#passkey-key').innerText()).toBe(key);
    const ids = mini.tokenizer.encode(prompt);
    console.log(`[web app] passkey example: ${ids.length} tokens, key ${key}`);

    await recordPrefill(p);
    await p.click('#generate');
    await waitState('gen', 'done', 300_000);
    lap('generated');
    const stats = await p.locator('#gen-stats').innerText();
    expect(stats).toContain(`prompt ${ids.length} tokens`);
    console.log(`[web app] prefill reports (tokens done): ${(await checkPrefillReports(p, ids.length)).join(', ')}`);
    await checkPasskeyMark(p, key);
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
    expect(count).toBe(ids.length);
    // The needle: the pass key's tokens, bold in the token list and ticked over the key strip.
    const needle = referenceNeedleTokens(mini.tokenizer, ids, key);
    expect(needle.length).toBeGreaterThanOrEqual(2);
    const marked = await p.locator('#vis-tokens span.needle').evaluateAll((els) => els.map((e) => Number((e as HTMLElement).dataset.i)));
    expect(marked).toEqual(needle);
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
    expect(fig.text).toMatch(/HiP's tree search chose \d+ of \d+ candidate key blocks/);
    // Strip columns whose tick row is magenta (#d4008a): exactly the needle's tokens (the canvas is wider than T keys).
    const ticked = await p.locator('#vis-strip').evaluate((c: HTMLCanvasElement, T: number) => {
      const d = c.getContext('2d')!.getImageData(0, 1, c.width, 1).data;
      const out: number[] = [];
      for (let t = 0; t < T; t++) {
        const x = Math.floor((t * c.width) / T); // key t's first column (each key has ≥ 1 of its own when width ≥ T)
        if (Math.abs(d[4 * x]! - 0xd4) < 8 && d[4 * x + 1]! < 8 && Math.abs(d[4 * x + 2]! - 0x8a) < 8) out.push(t);
      }
      return c.width >= T ? out : null;
    }, count);
    expect(ticked).toEqual(needle);
    // The per-layer/head summary and the drawings are there.
    expect(await p.locator('#vis-summary td[data-layer="4"][data-head="1"]').innerText()).toMatch(/\d+ %/);
    expect(await p.locator('#vis-tokens span[style*="background"]').count()).toBeGreaterThan(0);
    // Every method renders, and the cards show the method selected: the figures of its row of the table.
    const cards: Record<string, { keys: number; text: string }> = {};
    for (const m of ['streaming', 'dense', 'hip']) {
      await p.click(`#vis-method button[data-method="${m}"]`);
      await p.waitForFunction((want) => document.querySelector('#vis-figures tr.on td')?.textContent === want, m === 'hip' ? 'HiP' : m === 'dense' ? 'Dense' : 'StreamingLLM', { timeout: 30_000 });
      const row = await p.locator(`#vis-figures tr[data-method="${m}"] td`).allInnerTexts();
      expect(await p.locator('#vis-figures tr.on').getAttribute('data-method')).toBe(m);
      const [keys, upTo] = row[1]!.split(' / ').map(Number) as [number, number];
      expect(upTo).toBe(q + 1);
      const text = [await p.locator('#vis-keys').innerText(), await p.locator('#vis-topk').innerText(), await p.locator('#vis-mass').innerText()];
      expect(text).toEqual([`${keys} keys`, `top-k read ${row[2]}`, `mass ${row[3]}`]);
      expect(await p.locator('#vis-figures').getAttribute('data-method')).toBe(m);
      expect(Number(await p.locator('#vis-figures').getAttribute('data-keys'))).toBe(keys);
      cards[m] = { keys, text: text.join(' · ') };
    }
    console.log(`[web app] cards: ${JSON.stringify(cards)}`);
    // Dense reads every key and all the mass; HiP and StreamingLLM read fewer here, so their cards differ from dense's.
    expect(cards.dense!.keys).toBe(q + 1);
    expect(cards.dense!.text).toContain('mass 100.00 %');
    for (const m of ['hip', 'streaming']) {
      expect(cards[m]!.keys).toBeLessThan(q + 1);
      expect(cards[m]!.text).not.toBe(cards.dense!.text);
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
    // On the CPU (the device chosen above) too, a passkey prompt longer than one prefill chunk moves
    // the bar chunk by chunk (the CPU backend yields to the page between chunks), and the answer
    // of 2 tokens is marked as the test's comparison says.
    await p.fill('#passkey-tokens', '1024');
    await p.click('#example-passkey');
    const prompt = await p.inputValue('#prompt');
    const key = plantedKey(prompt);
    expect(await p.locator('#passkey-key').innerText()).toBe(key);
    await p.fill('#max-new', '2');
    await recordPrefill(p);
    await p.click('#generate');
    await waitState('gen', 'done', 120_000);
    const total = mini!.tokenizer.encode(prompt).length;
    expect(await p.locator('#gen-stats').innerText()).toMatch(/attention hip/);
    console.log(`[web app] CPU prefill reports (tokens done): ${(await checkPrefillReports(p, total)).join(', ')}`);
    await checkPasskeyMark(p, key);
    expect(logs.filter((l) => l.startsWith('[pageerror]'))).toEqual([]);
  });

  it('serve --api-key: the app asks for the key; a wrong key gets a clear message, the right one loads the model', async (ctx) => {
    if (skipReason) ctx.skip();
    const apiKey = `k-${Math.random().toString(36).slice(2)}`;
    keyServer = await startServer(['--api-key', apiKey]);
    const p = await context!.newPage();
    p.on('pageerror', (e) => logs.push(`[pageerror] ${e.stack ?? e.message}`));
    try {
      await p.goto(keyServer.url, { timeout: 60_000 });
      const field = p.locator('#api-key-input');
      await field.waitFor({ state: 'visible', timeout: 30_000 });
      expect(await p.locator('#load-status').innerText()).toMatch(/needs its API key/);
      expect(await p.inputValue('#url-input')).toBe(`${keyServer.url}/model/`);
      await p.selectOption('#device-select', 'cpu');
      const state = (want: string) => p.waitForFunction((w) => ['ready', 'error'].includes(document.body.dataset.model ?? '') && document.body.dataset.model === w, want, { timeout: 60_000, polling: 100 });
      // A wrong key: the server says 401 and the app says so, naming the key.
      await field.fill(`${apiKey}-wrong`);
      await p.click('#url-load');
      await state('error');
      expect(await p.locator('#load-status').innerText()).toMatch(/HTTP 401: the server needs its API key for the model files \(the one given is wrong\)/);
      // The right key loads the model.
      await field.fill(apiKey);
      await p.click('#url-load');
      await state('ready');
      expect(await p.locator('#load-status').innerText()).toMatch(/^Ready: .*CPU/);
      expect(await p.locator('#model-info').innerText()).toMatch(/6 layers · 4 heads \(1 KV\)/);
    } finally {
      await p.close();
    }
    expect(logs.filter((l) => l.startsWith('[pageerror]'))).toEqual([]);
  });
});
