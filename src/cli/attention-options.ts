/** Command-line flags for the attention method and its options, shared by every command. */
import { type Command, Option } from 'commander';
import { HipAttnError } from '../errors.js';
import { ATTENTION_METHODS, type AttentionConfig, type AttentionMethod } from '../attention/method.js';
import { HIP_DEFAULTS, type HipOptions, STREAMING_DEFAULTS, type StreamingOptions, resolveHipOptions, resolveStreamingOptions } from '../attention/options.js';

/** Parses a non-negative integer flag value (commander calls it with the raw string). */
export function intArg(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n)) {
      throw new HipAttnError('INVALID_OPTION', `${name} must be a non-negative integer, got "${value}"`);
    }
    return n;
  };
}

/** Parses a positive integer flag value. */
export function positiveIntArg(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
      throw new HipAttnError('INVALID_OPTION', `${name} must be a positive integer, got "${value}"`);
    }
    return n;
  };
}

/**
 * The library names options by their fields (`topK`, `contextLength`); on the command line the
 * same error should name the flag. Rewrites the field names of an INVALID_OPTION error with
 * `flags` (field → flag); other errors pass through unchanged.
 */
export function withFlagNames(e: unknown, flags: Readonly<Record<string, string>>): unknown {
  if (!(e instanceof HipAttnError) || e.code !== 'INVALID_OPTION') return e;
  const names = Object.keys(flags).sort((a, b) => b.length - a.length);
  if (names.length === 0) return e;
  const re = new RegExp(`\\b(${names.join('|')})\\b`, 'g');
  const message = e.message.replace(re, (field) => flags[field]!);
  return message === e.message ? e : new HipAttnError('INVALID_OPTION', message, { cause: e });
}

/** Generation options of the library and the flags of `generate` (and the other commands) that set them. */
export const GENERATION_FLAGS: Readonly<Record<string, string>> = {
  maxNewTokens: '--max-new-tokens',
  temperature: '--temperature',
  topP: '--top-p',
  topK: '--top-k',
  seed: '--seed',
  contextLength: '--context-length',
};

export function floatArg(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n)) throw new HipAttnError('INVALID_OPTION', `${name} must be a number, got "${value}"`);
    return n;
  };
}

/** A comma-separated list of positive integers, e.g. "1024,2048". */
export function intListArg(name: string) {
  return (value: string): number[] => value.split(',').map((v) => intArg(name)(v.trim()));
}

/** A comma-separated list of attention methods. */
export function methodListArg(value: string): AttentionMethod[] {
  const list = value.split(',').map((v) => v.trim());
  for (const m of list) {
    if (!ATTENTION_METHODS.includes(m as AttentionMethod)) {
      throw new HipAttnError('INVALID_OPTION', `--attention takes ${ATTENTION_METHODS.join(', ')} (comma-separated), got "${m}"`);
    }
  }
  return list as AttentionMethod[];
}

const HIP_FLAGS: [keyof HipOptions, string, string][] = [
  ['topK', '--hip-top-k <n>', 'HiP: keys selected per query block (k)'],
  ['blockSizeQ', '--hip-block-size-q <n>', 'HiP: queries sharing one mask (b_q)'],
  ['blockStrideQ', '--hip-block-stride-q <n>', 'HiP: query stride when scoring (b_sq)'],
  ['blockSizeK', '--hip-block-size-k <n>', 'HiP: keys per selected block (b_k)'],
  ['blockStrideK', '--hip-block-stride-k <n>', 'HiP: key stride when scoring (b_sk)'],
  ['sinkTokens', '--sink-tokens <n>', 'HiP: first tokens always attended'],
  ['slidingWindow', '--sliding-window <n>', 'HiP: recent tokens always attended'],
  ['refreshInterval', '--refresh-interval <n>', 'HiP: decoding steps between mask refreshes (r_m)'],
  ['denseLayers', '--dense-layers <n>', 'HiP: first layers kept dense (l_d)'],
  ['headGroupSize', '--head-group-size <n>', 'HiP: query heads sharing one top-k'],
  ['representativeBlocks', '--representative-blocks <n>', 'HiP: key blocks scored per half (its score is their max)'],
];

/** Adds --hip-* / --streaming-* flags (and, unless `methodFlag` is false, --attention). */
export function addAttentionOptions(cmd: Command, methodFlag: 'single' | 'list' | false = 'single'): Command {
  if (methodFlag === 'single') {
    cmd.addOption(new Option('--attention <method>', 'attention method').choices([...ATTENTION_METHODS]).default('hip'));
  } else if (methodFlag === 'list') {
    cmd.option('--attention <methods>', 'comma-separated attention methods (dense,hip,streaming)', methodListArg, [...ATTENTION_METHODS]);
  }
  for (const [key, flag, help] of HIP_FLAGS) cmd.option(flag, `${help} (default ${HIP_DEFAULTS[key]})`, intArg(flag.split(' ')[0]!));
  cmd.addOption(new Option('--representative <which>', `HiP: representative key block of a node (default ${HIP_DEFAULTS.representative})`).choices(['center', 'first']));
  cmd.addOption(
    new Option('--shifted-blocks <on|off>', `HiP decoding: between refreshes also read the selected blocks and the sink shifted by the steps since (default ${HIP_DEFAULTS.shiftedBlocks ? 'on' : 'off'})`).choices(['on', 'off']),
  );
  cmd.option('--streaming-sink-tokens <n>', `StreamingLLM: sink tokens (default ${STREAMING_DEFAULTS.sinkTokens})`, intArg('--streaming-sink-tokens'));
  cmd.option('--streaming-window <n>', `StreamingLLM: window (default ${STREAMING_DEFAULTS.slidingWindow})`, intArg('--streaming-window'));
  return cmd;
}

/** HiP option fields and their flags. */
const HIP_FIELD_FLAGS: Readonly<Record<string, string>> = {
  ...Object.fromEntries(HIP_FLAGS.map(([key, flag]) => [key, flag.split(' ')[0]!])),
  representative: '--representative',
  shiftedBlocks: '--shifted-blocks',
};
const STREAMING_FIELD_FLAGS: Readonly<Record<string, string>> = { sinkTokens: '--streaming-sink-tokens', slidingWindow: '--streaming-window' };

/**
 * The attention config of the parsed flags, for one method. Checked here, so that an
 * impossible combination is refused naming the flags (`--hip-top-k`), not the option fields.
 */
export function attentionConfigFrom(opts: Record<string, unknown>, method: AttentionMethod): AttentionConfig {
  const config = attentionConfigOf(opts, method);
  try {
    resolveHipOptions(config.hip);
  } catch (e) {
    throw withFlagNames(e, HIP_FIELD_FLAGS);
  }
  try {
    resolveStreamingOptions(config.streaming);
  } catch (e) {
    throw withFlagNames(e, STREAMING_FIELD_FLAGS);
  }
  return config;
}

function attentionConfigOf(opts: Record<string, unknown>, method: AttentionMethod): AttentionConfig & { hip: Partial<HipOptions>; streaming: Partial<StreamingOptions> } {
  const hip: Partial<HipOptions> = {};
  for (const [key, flag] of HIP_FLAGS) {
    const prop = flag
      .split(' ')[0]!
      .slice(2)
      .replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (opts[prop] !== undefined) (hip as Record<string, unknown>)[key] = opts[prop];
  }
  if (opts.representative !== undefined) hip.representative = opts.representative as HipOptions['representative'];
  if (opts.shiftedBlocks !== undefined) hip.shiftedBlocks = opts.shiftedBlocks === 'on';
  const streaming: Partial<StreamingOptions> = {};
  if (opts.streamingSinkTokens !== undefined) streaming.sinkTokens = opts.streamingSinkTokens as number;
  if (opts.streamingWindow !== undefined) streaming.slidingWindow = opts.streamingWindow as number;
  return { method, hip, streaming };
}
