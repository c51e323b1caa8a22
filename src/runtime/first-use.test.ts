/**
 * First use of the library: the embedded model without a path, the rule that tells local paths
 * from Hub ids, chat with models that have no template, the stream's statistics, and which
 * adapter `device: 'auto'` takes.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loudNotice, testSeed } from '../../test/gpu-helpers.js';
import { acquireGpu, type GpuAdapterSummary, isSoftwareAdapter } from '../gpu/device.js';
import { Rng } from '../util/rng.js';
import { isLocalPathLike } from './hub-id.js';
import { resolveModelPath } from './hub.js';
import { embeddedModelPath, loadModel } from './load.js';

const STORIES = 'models/stories260K/stories260K.gguf';

describe('the embedded model', () => {
  it('loadModel() with no source opens hip-testbed-mini from the package, the same model as its folder', async () => {
    expect(await embeddedModelPath()).toBe(resolve('models/hip-testbed-mini'));
    const embedded = await loadModel(undefined, { device: 'cpu', contextLength: 64 });
    const byPath = await loadModel('models/hip-testbed-mini', { device: 'cpu', contextLength: 64 });
    try {
      expect(embedded.name).toBe(await embeddedModelPath());
      const rng = new Rng(testSeed('embedded model prompt'));
      const ids = [embedded.tokenizer.bosTokenId!, ...Array.from({ length: 12 }, () => 3 + rng.int(embedded.config.vocabSize - 3))];
      const a = await embedded.generate({ ids }, { maxNewTokens: 6, temperature: 0 });
      const b = await byPath.generate({ ids }, { maxNewTokens: 6, temperature: 0 });
      expect(a.ids).toEqual(b.ids);
      expect(a.ids).toHaveLength(6);
    } finally {
      await embedded.dispose();
      await byPath.dispose();
    }
  });
});

describe('local paths and Hub ids', () => {
  it('tells path-like strings from Hub ids', () => {
    for (const p of ['./models/x', '../x', '/abs/model', '~/models/x', 'a/b/c', 'models/x.gguf', 'dir/config.json', 'org/name.safetensors', 'C:\\models\\x', 'C:/models/x', 'x', '.']) {
      expect(isLocalPathLike(p), p).toBe(true);
    }
    for (const id of ['org/name', 'models/hip-testbed-mini', 'meta-llama/Llama-3.2-1B', 'org/name@v1.0', 'org/name/file.gguf', 'org/name@main/sub/m.gguf']) {
      expect(isLocalPathLike(id), id).toBe(false);
    }
  });

  it('a missing path-like string says "no such local path" without asking the Hub; a missing org/name says both', async () => {
    const requests: string[] = [];
    const fetch404: typeof fetch = async (input) => {
      requests.push(String(input instanceof Request ? input.url : input));
      return new Response(JSON.stringify({ error: 'Repository not found' }), { status: 404, headers: { 'content-type': 'application/json' } });
    };
    const hub = { cacheDir: await mkdtemp(join(tmpdir(), 'hipattn-first-use-')), hubUrl: 'http://127.0.0.1:9', fetch: fetch404 };
    for (const p of ['./no-such-model', 'no-such-dir/model.gguf', 'a/b/c']) {
      await expect(resolveModelPath(p, hub), p).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining(`${p}: no such local path (${resolve(p)})`) });
    }
    expect(requests).toEqual([]);
    const err = (await resolveModelPath('no-such-dir/no-such-model', hub).catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toContain(`no-such-dir/no-such-model: no such local path (${resolve('no-such-dir/no-such-model')}), so it was taken as a Hugging Face Hub id`);
    expect(err.message).toMatch(/HTTP 404/);
    expect(requests.length).toBeGreaterThan(0);
  });
});

describe('chat and the stream', () => {
  it('generate({ messages }) works on a model without a chat template and equals the ChatML text as a prompt', async () => {
    const model = await loadModel(STORIES, { device: 'cpu', contextLength: 256 });
    try {
      const messages = [{ role: 'user', content: 'Tell me a story about a cat' }];
      const chat = await model.generate({ messages }, { maxNewTokens: 12, temperature: 0 });
      // The reference: the ChatML text written out by hand, BOS added as for any text prompt.
      const text = '<|im_start|>user\nTell me a story about a cat<|im_end|>\n<|im_start|>assistant\n';
      expect(model.encode({ messages })).toEqual(model.encode(text));
      const plain = await model.generate(text, { maxNewTokens: 12, temperature: 0, stopStrings: ['<|im_end|>'] });
      expect(chat.ids).toEqual(plain.ids);
      expect(chat.text).toBe(plain.text);
      expect(chat.promptTokens).toBe(model.encode(text).length);
    } finally {
      await model.dispose();
    }
  });

  it('stream.stats holds the totals after a for await loop (undefined before), the same as generate', async () => {
    const model = await loadModel(STORIES, { device: 'cpu', contextLength: 128 });
    try {
      const stream = model.stream('Once upon a time', { maxNewTokens: 10, temperature: 0 });
      expect(stream.stats).toBeUndefined();
      let text = '';
      for await (const t of stream) text += t.text;
      const ref = await model.generate('Once upon a time', { maxNewTokens: 10, temperature: 0 });
      expect(stream.stats).toBeDefined();
      expect(stream.stats!.text).toBe(text);
      expect(stream.stats!.ids).toEqual(ref.ids);
      expect(stream.stats!.promptTokens).toBe(ref.promptTokens);
      expect(stream.stats!.finishReason).toBe(ref.finishReason);
      expect(stream.stats!.decodeTokensPerSecond).toBeGreaterThan(0);
    } finally {
      await model.dispose();
    }
  });
});

describe("device 'auto' and software adapters", () => {
  const summary = (o: Partial<GpuAdapterSummary>): GpuAdapterSummary => ({
    vendor: '',
    architecture: '',
    device: '',
    description: '',
    isFallbackAdapter: false,
    subgroupMinSize: 0,
    subgroupMaxSize: 0,
    subgroupMatrixConfigs: [],
    ...o,
  });

  it('knows software adapters by the fallback flag or by name', () => {
    const software = [
      summary({ isFallbackAdapter: true, vendor: 'x' }),
      summary({ vendor: 'mesa', architecture: 'software', device: 'llvmpipe-llvm-15', description: 'llvmpipe: Mesa 25.0.7' }),
      summary({ vendor: 'google', architecture: 'swiftshader', description: 'SwiftShader Device (Subzero)' }),
      summary({ description: 'Microsoft Basic Render Driver' }),
      summary({ vendor: 'mesa', description: 'softpipe' }),
    ];
    const hardware = [
      summary({ vendor: 'nvidia', architecture: 'hopper', description: 'NVIDIA H100 80GB HBM3' }),
      summary({ vendor: 'amd', architecture: 'rdna-3', description: 'AMD Radeon RX 7900 XTX (RADV NAVI31)' }),
      summary({ vendor: 'apple', architecture: 'metal-3', description: 'Apple M2' }),
      summary({ vendor: 'intel', architecture: 'gen-12lp', description: 'Intel(R) Xe Graphics (Mesa)' }),
    ];
    for (const s of software) expect(isSoftwareAdapter(s), JSON.stringify(s)).toBe(true);
    for (const s of hardware) expect(isSoftwareAdapter(s), JSON.stringify(s)).toBe(false);
  });

  it('skipSoftwareAdapters: a software adapter counts as none (no device is made); a hardware one goes on to requestDevice', async () => {
    let devicesAsked = 0;
    const adapter = (info: Partial<GPUAdapterInfo>) =>
      ({
        info,
        features: new Set<string>(),
        limits: {},
        requestDevice: async () => {
          devicesAsked++;
          throw new Error('no device in this test');
        },
      }) as unknown as GPUAdapter;
    const gpuOf = (a: GPUAdapter) => ({ requestAdapter: async () => a }) as unknown as GPU;
    const swiftshader = adapter({ vendor: 'google', architecture: 'swiftshader', device: '', description: 'SwiftShader Device', isFallbackAdapter: false });
    expect(await acquireGpu({ gpu: gpuOf(swiftshader), ifUnavailable: 'null', skipSoftwareAdapters: true })).toBeNull();
    await expect(acquireGpu({ gpu: gpuOf(swiftshader), skipSoftwareAdapters: true })).rejects.toMatchObject({ code: 'GPU', message: expect.stringContaining('software') });
    expect(devicesAsked).toBe(0);
    // without the option the software adapter is used (device: 'webgpu')
    await expect(acquireGpu({ gpu: gpuOf(swiftshader) })).rejects.toThrow(/requestDevice\(\) failed/);
    expect(devicesAsked).toBe(1);
    const nvidia = adapter({ vendor: 'nvidia', architecture: 'hopper', device: '', description: 'NVIDIA H100', isFallbackAdapter: false });
    await expect(acquireGpu({ gpu: gpuOf(nvidia), ifUnavailable: 'null', skipSoftwareAdapters: true })).rejects.toThrow(/requestDevice\(\) failed/);
    expect(devicesAsked).toBe(2);
  });

  it("loadModel on 'auto' takes the CPU where this machine's adapter is a software one, WebGPU where it is hardware", async () => {
    const gpu = await acquireGpu({ ifUnavailable: 'null' });
    const software = gpu ? isSoftwareAdapter(gpu.adapterInfo) : undefined;
    gpu?.destroy();
    if (!gpu) loudNotice(["first-use.test: no WebGPU adapter here: 'auto' can only be checked to give the CPU"]);
    const model = await loadModel(STORIES, { device: 'auto', contextLength: 64 });
    try {
      expect(model.backend.device).toBe(gpu && !software ? 'webgpu' : 'cpu');
    } finally {
      await model.dispose();
    }
  });
});
