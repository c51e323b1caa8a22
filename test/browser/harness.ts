/**
 * Runs WebGPU code in headless Chromium (Debian's /usr/bin/chromium, through playwright-core)
 * and brings a JSON report back to Node. Node-only; used by `*.browser.test.ts` files.
 *
 * An *entry* is a TypeScript module whose default export (or export named `run`) is
 *
 *     export default async function (gpu: GpuContext, args: A): Promise<R>   // R JSON-able
 *
 * The harness bundles a small page script that imports the entry (esbuild, platform browser,
 * format esm), serves it from a Node http server on 127.0.0.1 (a secure context: WebGPU is not
 * exposed on about:blank or plain-http hosts other than localhost), gets a GpuContext with
 * `acquireGpu({ backend: 'browser' })`, calls the entry, and returns its report together with
 * the adapter info, features and limits the page saw.
 *
 * Chromium on a machine without a GPU gives WebGPU through SwiftShader: subgroups, timestamp
 * queries, but NO shader-f16 — the f32 kernel paths. `--use-webgpu-adapter=swiftshader` pins
 * that adapter even where a GPU or lavapipe would also be found.
 */

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { HipAttnError } from '../../src/errors.js';
import type { AcquireGpuOptions, GpuAdapterSummary, GpuFeatures, GpuLimits } from '../../src/gpu/index.js';
import { loudNotice, webgpuRequired } from '../gpu-helpers.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const GPU_INDEX = path.join(REPO_ROOT, 'src/gpu/index.ts');

/** Flags Chromium runs with (Playwright adds --headless itself). */
export const CHROMIUM_ARGS: readonly string[] = [
  '--headless',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--use-webgpu-adapter=swiftshader',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/** acquireGpu options that can cross into the page (JSON only: no device, adapter or callbacks). */
export type BrowserAcquireOptions = Pick<AcquireGpuOptions, 'disable' | 'powerPreference' | 'forceFallbackAdapter' | 'requiredFeatures' | 'requiredLimits'>;

export interface RunInBrowserOptions<A = unknown> {
  /** JSON-able argument handed to the entry. */
  args?: A;
  /** Options for acquireGpu in the page (e.g. `{ disable: { subgroups: true } }`). */
  acquire?: BrowserAcquireOptions;
  /** Limit for bundling + running the entry, default 300 s. */
  timeoutMs?: number;
  /** Receives each console line of the page (they are also kept in the result). */
  onLog?: (line: string) => void;
}

export interface BrowserRunResult<R> {
  report: R;
  adapterInfo: GpuAdapterSummary;
  features: GpuFeatures;
  limits: GpuLimits;
  userAgent: string;
  /** The page's console lines and uncaught errors. */
  logs: string[];
  /** Milliseconds spent bundling and running the entry. */
  bundleMs: number;
  runMs: number;
}

export interface LaunchOptions {
  /** Chromium binary; default $HIPATTN_CHROMIUM, else /usr/bin/chromium (or chromium on PATH). */
  executablePath?: string;
  /** Extra Chromium flags. */
  extraArgs?: string[];
}

/** The page script's answer. */
type PageAnswer<R> =
  | { status: 'ok'; report: R; adapterInfo: GpuAdapterSummary; features: GpuFeatures; limits: GpuLimits; userAgent: string }
  | { status: 'no-adapter'; userAgent: string; hasNavigatorGpu: boolean; secure: boolean };

/** Thrown when Chromium runs but gives no WebGPU adapter. */
export class BrowserNoAdapterError extends HipAttnError {
  constructor(message: string) {
    super('GPU', message);
  }
}

/**
 * The Chromium binary to use, or null when none is installed. An explicit path (argument, else
 * $HIPATTN_CHROMIUM) is used as given, with no fallback; otherwise /usr/bin/chromium, then
 * chromium or chromium-browser on PATH.
 */
export function findChromium(explicit?: string): string | null {
  const chosen = explicit ?? process.env.HIPATTN_CHROMIUM;
  if (chosen) return existsSync(chosen) ? chosen : null;
  for (const c of ['/usr/bin/chromium', '/usr/bin/chromium-browser']) if (existsSync(c)) return c;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    for (const name of ['chromium', 'chromium-browser']) {
      const p = path.join(dir, name);
      if (dir && existsSync(p)) return p;
    }
  }
  return null;
}

/**
 * One Chromium process and one local http server, reused for many `run()` calls (each run gets
 * a fresh page). Close it when done.
 */
export class BrowserHarness {
  private nextId = 0;

  private constructor(
    private readonly pages: Map<string, { html: string; js: string }>,
    private readonly context: BrowserContext,
    private readonly server: http.Server,
    private readonly origin: string,
    private readonly userDataDir: string,
    readonly executablePath: string,
  ) {}

  /** Starts the http server and Chromium with a fresh, empty profile. */
  static async launch(options: LaunchOptions = {}): Promise<BrowserHarness> {
    const exe = findChromium(options.executablePath);
    if (!exe) {
      const where = options.executablePath ?? process.env.HIPATTN_CHROMIUM;
      throw new HipAttnError(
        'UNSUPPORTED',
        where
          ? `Chromium not found at ${where}`
          : "Chromium not found: install Debian's chromium package (/usr/bin/chromium) or set HIPATTN_CHROMIUM",
      );
    }
    const pages = new Map<string, { html: string; js: string }>();
    const server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      const m = /^\/run\/([0-9]+)\/(index\.html|page\.js)?$/.exec(url.pathname);
      const page = m ? pages.get(m[1]!) : undefined;
      if (!m || !page) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        return;
      }
      if (m[2] === 'page.js') {
        res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' }).end(page.js);
      } else {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(page.html);
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const userDataDir = mkdtempSync(path.join(tmpdir(), 'hipattn-chromium-'));
    let context: BrowserContext;
    try {
      context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: exe,
        headless: true,
        args: [...CHROMIUM_ARGS, ...(options.extraArgs ?? [])],
        timeout: 120_000,
      });
    } catch (e) {
      server.close();
      rmSync(userDataDir, { recursive: true, force: true });
      throw new HipAttnError('UNSUPPORTED', `could not start Chromium (${exe}): ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    return new BrowserHarness(pages, context, server, origin, userDataDir, exe);
  }

  /**
   * Bundles `entryFile` and runs it in a new page.
   * @throws BrowserNoAdapterError when the page gets no WebGPU adapter; the page's error (with
   *   its console output) when the entry throws; HipAttnError on bundling errors or timeout.
   */
  async run<R = unknown, A = unknown>(entryFile: string | URL, options: RunInBrowserOptions<A> = {}): Promise<BrowserRunResult<R>> {
    const file = entryFile instanceof URL ? fileURLToPath(entryFile) : path.resolve(entryFile);
    const importLine = `import * as entry from ${JSON.stringify(file)};`;
    return this.runSource<R, A>(importLine, path.basename(file), options);
  }

  /** Checks that the page gets an adapter; returns what it saw, or null. */
  async probe(acquire: BrowserAcquireOptions = {}): Promise<Omit<BrowserRunResult<null>, 'report'> | null> {
    try {
      return await this.runSource<null, undefined>('const entry = { default: async () => null };', 'probe', { acquire });
    } catch (e) {
      if (e instanceof BrowserNoAdapterError) return null;
      throw e;
    }
  }

  private async runSource<R, A>(importCode: string, name: string, options: RunInBrowserOptions<A>): Promise<BrowserRunResult<R>> {
    const timeoutMs = options.timeoutMs ?? 300_000;
    const t0 = performance.now();
    const js = await bundlePage(importCode, name);
    const bundleMs = performance.now() - t0;
    const id = String(this.nextId++);
    this.pages.set(id, {
      js,
      html: `<!doctype html><meta charset="utf-8"><title>hipattn ${escapeHtml(name)}</title><script type="module" src="/run/${id}/page.js"></script>`,
    });
    const logs: string[] = [];
    const log = (line: string) => {
      logs.push(line);
      options.onLog?.(line);
    };
    const page: Page = await this.context.newPage();
    page.on('console', (m) => log(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => log(`[pageerror] ${e.stack ?? e.message}`));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new HipAttnError('GPU', `browser run of ${name} timed out after ${timeoutMs} ms; page log:\n${logs.join('\n')}`)),
        timeoutMs,
      );
    });
    const t1 = performance.now();
    try {
      const answer = await Promise.race([
        (async () => {
          await page.goto(`${this.origin}/run/${id}/index.html`, { timeout: timeoutMs });
          await page.waitForFunction(() => (window as unknown as { __hipattnRun?: unknown }).__hipattnRun !== undefined, null, { timeout: timeoutMs });
          return page.evaluate(
            ([args, acquire]) =>
              (window as unknown as { __hipattnRun: (a: unknown, o: unknown) => Promise<unknown> }).__hipattnRun(args, acquire),
            [options.args ?? null, options.acquire ?? {}] as const,
          ) as Promise<PageAnswer<R>>;
        })(),
        timeout,
      ]);
      const runMs = performance.now() - t1;
      if (answer.status === 'no-adapter') {
        throw new BrowserNoAdapterError(
          `Chromium (${answer.userAgent}) gave no WebGPU adapter: navigator.gpu ${answer.hasNavigatorGpu ? 'exists' : 'is missing'}, ` +
            `secure context: ${answer.secure}. Page log:\n${logs.join('\n')}`,
        );
      }
      const { report, adapterInfo, features, limits, userAgent } = answer;
      return { report, adapterInfo, features, limits, userAgent, logs, bundleMs, runMs };
    } catch (e) {
      if (e instanceof HipAttnError) throw e;
      const msg = e instanceof Error ? e.message : String(e);
      throw new Error(`browser run of ${name} failed: ${msg}\npage log:\n${logs.join('\n')}`, { cause: e });
    } finally {
      clearTimeout(timer);
      this.pages.delete(id);
      await page.close().catch(() => undefined);
    }
  }

  /** Closes Chromium and the server and removes the profile directory. */
  async close(): Promise<void> {
    await this.context.close().catch(() => undefined);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.userDataDir, { recursive: true, force: true });
  }
}

/** Bundles the page script: acquire a context in the browser, run the entry, answer. */
async function bundlePage(importCode: string, name: string): Promise<string> {
  const contents = `
import { acquireGpu } from ${JSON.stringify(GPU_INDEX)};
${importCode}
const run = entry.default ?? entry.run;
window.__hipattnRun = async (args, acquire) => {
  if (typeof run !== 'function') throw new Error(${JSON.stringify(`${name} has no default export or run() function`)});
  const gpu = await acquireGpu({ ...acquire, backend: 'browser', ifUnavailable: 'null' });
  if (!gpu) {
    return { status: 'no-adapter', userAgent: navigator.userAgent, hasNavigatorGpu: !!navigator.gpu, secure: window.isSecureContext };
  }
  try {
    const report = await run(gpu, args);
    return { status: 'ok', report, adapterInfo: gpu.adapterInfo, features: gpu.features, limits: gpu.limits, userAgent: navigator.userAgent };
  } finally {
    gpu.destroy();
  }
};
`;
  try {
    const out = await esbuild.build({
      stdin: { contents, resolveDir: REPO_ROOT, sourcefile: `${name}.page.ts`, loader: 'ts' },
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'chrome120',
      sourcemap: 'inline',
      write: false,
      logLevel: 'silent',
    });
    return out.outputFiles[0]!.text;
  } catch (e) {
    const errors = (e as { errors?: esbuild.Message[] }).errors;
    const detail = errors
      ? errors.map((m) => `${m.location ? `${m.location.file}:${m.location.line}:${m.location.column}: ` : ''}${m.text}`).join('\n')
      : String(e);
    throw new HipAttnError('GPU', `bundling ${name} for the browser failed:\n${detail}`, { cause: e });
  }
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * One-shot: launch Chromium, run `entryFile` once, close. For several runs, keep a
 * `BrowserHarness` (launch takes ~1 s).
 */
export async function runInBrowser<R = unknown, A = unknown>(
  entryFile: string | URL,
  options: RunInBrowserOptions<A> & LaunchOptions = {},
): Promise<BrowserRunResult<R>> {
  const h = await BrowserHarness.launch(options);
  try {
    return await h.run<R, A>(entryFile, options);
  } finally {
    await h.close();
  }
}

/**
 * For test files: a launched harness whose page has a WebGPU adapter, or null after a loud
 * notice (tests then skip with `describe.skipIf(!browser)`). With HIPATTN_REQUIRE_WEBGPU=1 a
 * missing Chromium or adapter throws instead, failing the run.
 */
export async function getTestBrowser(options: LaunchOptions = {}): Promise<BrowserHarness | null> {
  let harness: BrowserHarness | null = null;
  let why: string;
  try {
    harness = await BrowserHarness.launch(options);
    const seen = await harness.probe();
    if (seen) {
      console.log(
        `[hipattn test] Chromium WebGPU adapter: ${JSON.stringify(seen.adapterInfo)} features ${JSON.stringify(seen.features)}`,
      );
      return harness;
    }
    why = 'Chromium started but its page got no WebGPU adapter';
  } catch (e) {
    why = e instanceof Error ? e.message : String(e);
  }
  await harness?.close();
  if (webgpuRequired()) throw new Error(`HIPATTN_REQUIRE_WEBGPU=1 but browser WebGPU is unavailable: ${why}`);
  loudNotice([
    'NO BROWSER WEBGPU: BROWSER GPU TESTS IN THIS FILE ARE SKIPPED.',
    why.split('\n')[0]!,
    "Install Debian's chromium (apt-get install chromium) or run .ci/run.",
    'Set HIPATTN_REQUIRE_WEBGPU=1 to make this a failure.',
  ]);
  return null;
}
