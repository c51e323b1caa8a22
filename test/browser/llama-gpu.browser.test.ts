/**
 * LlamaGpu in headless Chromium (SwiftShader WebGPU, no shader-f16: the f32 path): the mini
 * model's files are served over http to the page, which loads and runs it; logits and greedy
 * tokens match the CPU forward pass in Node.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { argmax } from '../../src/model/cpu-ops.js';
import { LlamaCpu } from '../../src/model/llama-cpu.js';
import { openModelPath } from '../../src/model/node-load.js';
import { loadLlamaWeightsF32 } from '../../src/model/weights.js';
import { getTestBrowser } from './harness.js';
import type { LlamaGpuBrowserArgs } from './entries/llama-gpu.entry.js';

const MODEL = 'models/hip-testbed-mini';
const FILES = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];

const browser = await getTestBrowser();
// A static file server for the model (another origin than the harness page: CORS allowed).
const server = http.createServer((req, res) => {
  const name = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname.slice(1));
  if (!FILES.includes(name)) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'access-control-allow-origin': '*', 'content-type': 'application/octet-stream' }).end(readFileSync(path.join(MODEL, name)));
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
afterAll(async () => {
  await browser?.close();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe.skipIf(!browser)('LlamaGpu in Chromium (SwiftShader)', () => {
  it('runs hip-testbed-mini from files served to the page: logits and greedy tokens match the CPU', async () => {
    const golden = JSON.parse(readFileSync(`${MODEL}/golden.json`, 'utf8')) as { inputs: { input_ids: number[] }[] };
    const prompt = golden.inputs[0]!.input_ids.slice(0, 20);
    const steps = 4;
    const args: LlamaGpuBrowserArgs = { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, files: FILES, prompt, steps };
    const r = await browser!.run<{ weightType: string; loadMs: number; prefillMs: number; totalMs: number; logitsBits: number[]; ids: number[]; text: string }, LlamaGpuBrowserArgs>(
      new URL('./entries/llama-gpu.entry.ts', import.meta.url),
      { args },
    );
    const got = new Float32Array(new Uint32Array(r.report.logitsBits).buffer);

    const m = await openModelPath(MODEL);
    const cpu = new LlamaCpu(m.config, await loadLlamaWeightsF32(m.config, m.store), { capacity: 64 });
    const want = cpu.forward(prompt);
    let d = 0;
    for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(got[i]! - want[i]!));
    const ids: number[] = [];
    let next = argmax(want);
    for (let s = 0; s < steps; s++) {
      ids.push(next);
      next = argmax(cpu.forward([next]));
    }
    console.log(
      `Chromium ${r.userAgent.match(/Chrome\/[0-9.]+/)?.[0]} on ${r.adapterInfo.vendor} ${r.adapterInfo.architecture} (shader-f16 ${r.features.shaderF16}): ` +
        `${r.report.weightType} weights, load ${r.report.loadMs.toFixed(0)} ms, prefill ${prompt.length} tokens ${r.report.prefillMs.toFixed(0)} ms, total ${r.report.totalMs.toFixed(0)} ms; ` +
        `max |Δ logit| vs CPU = ${d.toExponential(2)}; greedy ${JSON.stringify(r.report.text)}`,
    );
    expect(r.report.weightType).toBe(r.features.shaderF16 ? 'f16' : 'f32');
    expect(d).toBeLessThanOrEqual(r.features.shaderF16 ? 5e-2 : 1e-3);
    expect(r.report.ids).toEqual(ids);
    await m.store.close();
  });
});
