/**
 * `hipattn generate`: stream a model's continuation of a prompt to stdout, then print speeds
 * and memory to stderr.
 */
import { readFile } from 'node:fs/promises';
import { type Command, Option } from 'commander';
import { HipAttnError } from '../errors.js';
import type { AttentionMethod } from '../attention/method.js';
import type { StorageType } from '../kernels/types.js';
import type { HubOptions } from '../runtime/hub-id.js';
import { loadModel } from '../runtime/load.js';
import { GENERATION_FLAGS, addAttentionOptions, attentionConfigFrom, floatArg, intArg, positiveIntArg, withFlagNames } from './attention-options.js';
import { defaultModelPath } from './paths.js';
import { progressBar } from './progress.js';

export function addModelOptions(cmd: Command): Command {
  return cmd
    .option(
      '--model <dir|file.gguf|id>',
      'a Hugging Face model directory, a GGUF file, or a Hub id org/name[@revision][/file.gguf] (downloaded into the Hugging Face cache; default: the embedded hip-testbed-mini)',
    )
    .addOption(new Option('--device <device>', 'where to run').choices(['auto', 'cpu', 'webgpu']).default('auto'))
    .addOption(new Option('--dtype <type>', 'WebGPU storage of weights, activations and KV cache (default f16 where the adapter has shader-f16, else f32)').choices(['f16', 'f32']))
    .option('--context-length <tokens>', 'KV-cache capacity in tokens (default: the model\'s, at most 16384)', positiveIntArg('--context-length'))
    .option('--revision <rev>', 'Hub id: branch, tag or commit (default main; same as org/name@rev)')
    .option('--cache-dir <dir>', 'Hub id: the Hugging Face cache (default $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub)')
    .option('--offline', 'Hub id: use the cache only, never the network')
    .option('--hub-url <url>', 'Hub id: the Hub\'s address, e.g. a mirror (default https://huggingface.co)');
}

/** The `device` and `dtype` options of loadModel from the flags of addModelOptions. */
export function deviceOptionsFrom(opts: Record<string, unknown>): { device: 'auto' | 'cpu' | 'webgpu'; dtype?: StorageType } {
  return { device: opts.device as 'auto' | 'cpu' | 'webgpu', ...(opts.dtype !== undefined ? { dtype: opts.dtype as StorageType } : {}) };
}

/** The `hub` options of loadModel from the flags of addModelOptions (the token comes from $HF_TOKEN). */
export function hubOptionsFrom(opts: Record<string, unknown>): HubOptions {
  const hub: HubOptions = {};
  if (opts.revision !== undefined) hub.revision = opts.revision as string;
  if (opts.cacheDir !== undefined) hub.cacheDir = opts.cacheDir as string;
  if (opts.offline === true) hub.offline = true;
  if (opts.hubUrl !== undefined) hub.hubUrl = opts.hubUrl as string;
  return hub;
}

export function registerGenerate(program: Command): void {
  const cmd = program
    .command('generate')
    .description('generate text from a prompt, streaming it to stdout')
    .option('--prompt <text>', 'the prompt (an empty prompt starts from BOS)')
    .option('--prompt-file <file>', 'read the prompt from a file')
    .option('--max-new-tokens <n>', 'tokens to generate', intArg('--max-new-tokens'), 128)
    .option('--temperature <t>', '0 = greedy', floatArg('--temperature'))
    .option('--top-p <p>', 'nucleus sampling', floatArg('--top-p'))
    .option('--top-k <k>', 'sample among the k most likely tokens', intArg('--top-k'))
    .option('--seed <n>', 'sampling seed', intArg('--seed'))
    .option('--stop <text...>', 'stop strings');
  addModelOptions(cmd);
  addAttentionOptions(cmd, 'single');
  cmd.action(async (opts: Record<string, unknown>) => {
    if (opts.prompt !== undefined && opts.promptFile !== undefined) throw new HipAttnError('INVALID_OPTION', 'give --prompt or --prompt-file, not both');
    const text = opts.promptFile !== undefined ? await readFile(opts.promptFile as string, 'utf8') : ((opts.prompt as string | undefined) ?? '');
    const bar = progressBar('loading');
    const model = await loadModel((opts.model as string | undefined) ?? defaultModelPath(), {
      ...deviceOptionsFrom(opts),
      attention: attentionConfigFrom(opts, opts.attention as AttentionMethod),
      contextLength: opts.contextLength as number | undefined,
      hub: hubOptionsFrom(opts),
      onProgress: (e) => bar.update(e.total > 0 ? e.loaded / e.total : 1, e.stage === 'download' ? `download ${e.item ?? ''}` : (e.item ?? e.stage)),
    }).finally(() => bar.stop());
    try {
      const ids = text === '' ? (model.tokenizer.bosTokenId !== undefined ? [model.tokenizer.bosTokenId] : []) : model.encode(text);
      if (ids.length === 0) throw new HipAttnError('INVALID_OPTION', 'the prompt is empty and the model has no BOS token');
      const stats = await model
        .generate(
          { ids },
          {
            maxNewTokens: opts.maxNewTokens as number,
            temperature: opts.temperature as number | undefined,
            topP: opts.topP as number | undefined,
            topK: opts.topK as number | undefined,
            seed: opts.seed as number | undefined,
            stopStrings: opts.stop as string[] | undefined,
            onToken: (t) => process.stdout.write(t.text),
          },
        )
        .catch((e: unknown) => {
          throw withFlagNames(e, GENERATION_FLAGS);
        });
      process.stdout.write('\n');
      console.error(
        `[${model.backend.description}; attention ${model.attention.method}] prompt ${stats.promptTokens} tokens: prefill ${stats.prefillTokensPerSecond.toFixed(1)} tok/s; ` +
          `${stats.ids.length} generated: decode ${stats.decodeTokensPerSecond.toFixed(1)} tok/s; finish: ${stats.finishReason}; ` +
          `model memory ${(model.backend.memoryBytes() / 2 ** 20).toFixed(1)} MiB, peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`,
      );
    } finally {
      await model.dispose();
    }
  });
}
