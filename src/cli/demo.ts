/**
 * `hipattn demo` (what `npm start` runs): passkey retrieval on the embedded hip-testbed-mini
 * with dense, HiP and StreamingLLM attention; prints accuracy and time per method and writes a
 * heatmap chart. On a GPU (device auto → WebGPU) it runs the 4k and 8k contexts the model was
 * trained for; on the CPU fallback (plain JavaScript, ~1.5 GFLOP/s: one dense 8k prefill of
 * this model takes ~5 minutes of CPU time) and on software WebGPU adapters (lavapipe), unless
 * lengths are given, it runs a 2k version that fits in a few minutes and still shows the
 * difference (StreamingLLM's window cannot reach a needle in the middle).
 */
import { basename } from 'node:path';
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { Haystack, passkeyTask } from '../eval/prompts.js';
import { isSoftwareAdapter } from '../gpu/device.js';
import { loadModel } from '../runtime/load.js';
import { addAttentionOptions, intArg, intListArg } from './attention-options.js';
import { defaultHaystackPath, depthListArg, runRetrievalCommand } from './eval.js';
import { addModelOptions, deviceOptionsFrom, hubOptionsFrom } from './generate.js';
import { defaultModelPath } from './paths.js';

export interface DemoPreset {
  lengths: number[];
  depths: number[];
  trials: number;
}

/**
 * Settings by device: the full demo on a GPU; a shorter one on the CPU and on software WebGPU
 * adapters (Mesa lavapipe, SwiftShader), which run an 8k prompt in minutes, not seconds.
 */
export const DEMO_PRESETS: Record<'gpu' | 'slow', DemoPreset> = {
  gpu: { lengths: [4096, 8192], depths: [0, 0.25, 0.5, 0.75, 1], trials: 2 },
  slow: { lengths: [2048], depths: [0.25, 0.75], trials: 1 },
};


export function registerDemo(program: Command): void {
  const cmd = program
    .command('demo')
    .description('passkey retrieval on the embedded model with dense, HiP and StreamingLLM attention: accuracy, time and a chart (npm start)')
    .option('--lengths <tokens>', 'context lengths (default: 4096,8192 on a GPU, 2048 on the CPU or a software adapter)', intListArg('--lengths'))
    .option('--depths <fractions>', 'needle depths in [0, 1] (default: 0,0.25,0.5,0.75,1 on a GPU, 0.25,0.75 otherwise)', depthListArg)
    .option('--trials <n>', 'trials per cell (default: 2 on a GPU, 1 otherwise)', intArg('--trials'))
    .option('--seed <n>', 'seed of the prompts', intArg('--seed'), 1)
    .option('--haystack <file>', 'filler prose (default: the embedded Northanger Abbey excerpt)')
    .option('--json <file>', 'also write the results as JSON')
    .option('--chart <file>', 'chart file (.svg or .png)', 'out/demo-passkey.svg')
    .option('--no-progress', 'no progress bar');
  addModelOptions(cmd);
  addAttentionOptions(cmd, 'list');
  cmd.action(async (opts: Record<string, unknown>) => {
    const modelPath = (opts.model as string | undefined) ?? defaultModelPath();
    // Which device does 'auto' give? (A small load; the weights of the embedded model take a moment.)
    const probe = await loadModel(modelPath, { ...deviceOptionsFrom(opts), attention: 'dense', contextLength: 16, hub: hubOptionsFrom(opts) });
    const device = probe.backend.device;
    const adapter = probe.backend.adapter;
    const description = probe.backend.description;
    await probe.dispose();
    const slow = device === 'cpu' || (adapter !== undefined && isSoftwareAdapter(adapter));
    const preset = DEMO_PRESETS[slow ? 'slow' : 'gpu'];
    const lengths = (opts.lengths as number[] | undefined) ?? preset.lengths;
    const depths = (opts.depths as number[] | undefined) ?? preset.depths;
    const trials = (opts.trials as number | undefined) ?? preset.trials;
    if (slow && opts.lengths === undefined) {
      console.error(
        `note: no hardware GPU: running on ${description}. The full demo (4k and 8k contexts) needs minutes per 8k prompt there;\n` +
          `      this is the short version (${lengths.join(',')} tokens). Ask for the full one with --lengths 4096,8192 --depths 0,0.25,0.5,0.75,1 --trials 2.`,
      );
    }
    const haystackPath = (opts.haystack as string | undefined) ?? defaultHaystackPath();
    const text = await readFile(haystackPath, 'utf8');
    const seed = opts.seed as number;
    const r = await runRetrievalCommand({
      task: 'demo',
      chartTask: 'passkey',
      opts: opts as Parameters<typeof runRetrievalCommand>[0]['opts'],
      options: { lengths, depths, trials, seed, format: 'plain', haystack: haystackPath },
      makeTask: (tokenizer) => passkeyTask({ tokenizer, layout: 'plain', seed, haystack: new Haystack(tokenizer, text, basename(haystackPath)) }),
      lengths,
      depths,
      trials,
    });
    if (r.interrupted) process.exitCode = 130;
  });
}
