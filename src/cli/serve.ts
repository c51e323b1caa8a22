/**
 * `hipattn serve`: an OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions,
 * /v1/models; /health, /ready, /metrics) in front of one model; graceful shutdown on SIGTERM / SIGINT.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Command } from 'commander';
import type { AttentionMethod } from '../attention/method.js';
import { HipAttnError } from '../errors.js';
import { loadModel } from '../runtime/load.js';
import type { HipModel } from '../runtime/model.js';
import { createServer, type RequestLog } from '../server/index.js';
import { addAttentionOptions, attentionConfigFrom, floatArg, intArg } from './attention-options.js';
import { addModelOptions, deviceOptionsFrom, hubOptionsFrom } from './generate.js';
import { defaultModelPath, packageRoot } from './paths.js';
import { progressBar } from './progress.js';

/** The id clients use: a local model's folder or file name (without .gguf), or the Hub id as given. */
export function defaultModelId(source: string): string {
  if (existsSync(source)) return basename(source.replace(/[\\/]+$/, '')).replace(/\.gguf$/i, '') || source;
  return source;
}

function formatLog(r: RequestLog): string {
  const parts = [`${r.endpoint} ${r.status}`, r.stream ? 'stream' : 'json', r.outcome, `prompt ${r.promptTokens}`, `completion ${r.completionTokens}`];
  parts.push(`queue ${(r.queueMs / 1000).toFixed(2)} s`, `total ${(r.totalMs / 1000).toFixed(2)} s`);
  if (r.error) parts.push(r.code ? `${r.code}: ${r.error}` : r.error);
  return `hipattn serve: ${parts.join(' | ')}`;
}

/** The built browser app (npm run build:web), or undefined when it is not built. */
export function webAppDir(): string | undefined {
  const dir = join(packageRoot(), 'web', 'dist');
  return existsSync(join(dir, 'index.html')) ? dir : undefined;
}

/** `--ui`: the app at /, and the model's files at /model/ when it is a local folder or .gguf file. */
function uiOptions(source: string, staticDir: string | undefined): { staticDir: string; modelFiles?: string } {
  if (staticDir !== undefined) throw new HipAttnError('INVALID_OPTION', '--ui and --static-dir both serve files at /: choose one');
  const dir = webAppDir();
  if (!dir) throw new HipAttnError('INVALID_OPTION', `--ui: the browser app is not built (no ${join(packageRoot(), 'web', 'dist', 'index.html')}); run 'npm run build:web' in the hipattn package`);
  const local = existsSync(source) && (statSync(source).isDirectory() ? existsSync(join(source, 'config.json')) : /\.gguf$/i.test(source));
  return local ? { staticDir: dir, modelFiles: source } : { staticDir: dir };
}

export function registerServe(program: Command): void {
  const cmd = program
    .command('serve')
    .description('serve a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models; /health, /ready, /metrics)')
    .option('--host <address>', 'interface to listen on (0.0.0.0 for every interface)', '127.0.0.1')
    .option('--port <n>', 'TCP port (0: any free port)', intArg('--port'), 8080)
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on /v1 requests and /model/ files (default: $HIPATTN_API_KEY, else none)')
    .option('--model-id <id>', 'the model id of the API (default: the model folder or file name, or the Hub id)')
    .option('--max-concurrency <n>', 'generations running at once; each loads its own copy of the model (weights and KV cache)', intArg('--max-concurrency'), 1)
    .option('--max-queue <n>', 'requests waiting for a free model; more get 429', intArg('--max-queue'), 64)
    .option('--shutdown-grace <seconds>', 'on SIGTERM/SIGINT, let running generations finish this long before aborting them', floatArg('--shutdown-grace'), 30)
    .option('--strict-model-id', "refuse requests whose 'model' is not the served id (404 model_not_found); by default any 'model' is answered")
    .option('--headers-timeout <seconds>', "a client must send a request's headers within this time", floatArg('--headers-timeout'), 60)
    .option('--request-timeout <seconds>', 'a client must send a whole request within this time (0: no limit; answers, streams included, are not limited)', floatArg('--request-timeout'), 300)
    .option('--keep-alive-timeout <seconds>', 'close kept-alive connections idle this long between requests (behind a load balancer: longer than its idle timeout)', floatArg('--keep-alive-timeout'), 72)
    .option('--max-prompt-chars-per-token <n>', 'refuse text and chat prompts longer than the context length × this many characters before tokenizing them', floatArg('--max-prompt-chars-per-token'), 16)
    .option('--idle-timeout <seconds>', 'disconnect a client silent this long while the server waits on it (a stalled upload, a stream it stops reading; 0: never)', floatArg('--idle-timeout'), 60)
    .option('--static-dir <dir>', 'also serve this folder as static files at / (e.g. a browser app build)')
    .option('--ui', "also serve the browser app (web/dist, built by 'npm run build:web') at /, and a local model's files at /model/ for it")
    .option('--quiet', 'do not log requests to stderr');
  addModelOptions(cmd);
  addAttentionOptions(cmd, 'single');
  cmd.action(async (opts: Record<string, unknown>) => {
    const concurrency = opts.maxConcurrency as number;
    if (concurrency < 1) throw new HipAttnError('INVALID_OPTION', '--max-concurrency must be at least 1');
    const grace = opts.shutdownGrace as number;
    if (grace < 0) throw new HipAttnError('INVALID_OPTION', '--shutdown-grace must be ≥ 0');
    const port = opts.port as number;
    if (port > 65535) throw new HipAttnError('INVALID_OPTION', `--port must be at most 65535, got ${port}`);
    const apiKey = (opts.apiKey as string | undefined) ?? (process.env.HIPATTN_API_KEY || undefined);
    const timeouts: Record<string, number> = {};
    for (const [flag, key, option] of [
      ['--headers-timeout', 'headersTimeout', 'headersTimeoutMs'],
      ['--request-timeout', 'requestTimeout', 'requestTimeoutMs'],
      ['--keep-alive-timeout', 'keepAliveTimeout', 'keepAliveTimeoutMs'],
      ['--idle-timeout', 'idleTimeout', 'idleTimeoutMs'],
    ] as const) {
      const seconds = opts[key] as number;
      if (!(seconds >= 0)) throw new HipAttnError('INVALID_OPTION', `${flag} must be ≥ 0 seconds, got ${seconds}`);
      timeouts[option] = Math.round(seconds * 1000);
    }
    if (!((opts.maxPromptCharsPerToken as number) >= 1)) throw new HipAttnError('INVALID_OPTION', '--max-prompt-chars-per-token must be at least 1');
    if (timeouts.headersTimeoutMs! < 1) throw new HipAttnError('INVALID_OPTION', '--headers-timeout must be more than 0');
    if (timeouts.requestTimeoutMs! > 0 && timeouts.headersTimeoutMs! > timeouts.requestTimeoutMs!) {
      throw new HipAttnError('INVALID_OPTION', '--headers-timeout must not be longer than --request-timeout');
    }
    if (opts.staticDir !== undefined && !existsSync(opts.staticDir as string)) {
      throw new HipAttnError('INVALID_OPTION', `--static-dir ${opts.staticDir as string} does not exist`);
    }
    const source = (opts.model as string | undefined) ?? defaultModelPath();
    const ui = opts.ui === true ? uiOptions(source, opts.staticDir as string | undefined) : undefined;

    const models: HipModel[] = [];
    const bar = progressBar('loading');
    try {
      for (let i = 0; i < concurrency; i++) {
        models.push(
          await loadModel(source, {
            ...deviceOptionsFrom(opts),
            attention: attentionConfigFrom(opts, opts.attention as AttentionMethod),
            contextLength: opts.contextLength as number | undefined,
            hub: hubOptionsFrom(opts),
            onProgress: (e) => bar.update(e.total > 0 ? (i + e.loaded / e.total) / concurrency : 1, e.stage === 'download' ? `download ${e.item ?? ''}` : (e.item ?? e.stage)),
          }),
        );
      }
    } catch (e) {
      await Promise.all(models.map((m) => m.dispose()));
      throw e;
    } finally {
      bar.stop();
    }

    const quiet = opts.quiet === true;
    const server = await createServer(models, {
      host: opts.host as string,
      port,
      ...(apiKey !== undefined ? { apiKey } : {}),
      modelId: (opts.modelId as string | undefined) ?? defaultModelId(source),
      modelAliases: [source],
      maxQueue: opts.maxQueue as number,
      shutdownGraceMs: grace * 1000,
      strictModelId: opts.strictModelId === true,
      maxPromptCharsPerToken: opts.maxPromptCharsPerToken as number,
      ...timeouts,
      ...(opts.staticDir !== undefined ? { staticDir: opts.staticDir as string } : {}),
      ...(ui ?? {}),
      ...(quiet ? {} : { onRequestDone: (r: RequestLog) => console.error(formatLog(r)) }),
    });
    let url: string;
    try {
      ({ url } = await server.listen());
    } catch (e) {
      await Promise.all(models.map((m) => m.dispose()));
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL') {
        throw new HipAttnError('INVALID_OPTION', `cannot listen on ${opts.host as string}:${port}: ${err.message}`);
      }
      throw e;
    }
    const m = models[0]!;
    console.error(
      `hipattn serve: model ${server.modelId} (${m.backend.description}; attention ${m.attention.method}; context ${m.contextLength} tokens; ` +
        `${concurrency} slot${concurrency > 1 ? 's' : ''}, queue ${opts.maxQueue as number})${apiKey !== undefined ? '; API key required' : ''}`,
    );
    if (ui) {
      console.error(
        `hipattn serve: browser app at ${url}/${ui.modelFiles !== undefined ? ` (the model's files at ${url}/model/)` : ' (the model is not a local folder or .gguf file: load one in the app)'}`,
      );
    }
    // One line on stdout with the address (tests and scripts read it, e.g. with --port 0).
    console.log(`listening on ${url}`);

    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (signal: NodeJS.Signals): void => {
        if (stopping) {
          console.error(`hipattn serve: ${signal} again, exiting now`);
          process.exit(1);
        }
        stopping = true;
        console.error(`hipattn serve: ${signal}: shutting down (running requests get ${grace} s to finish)`);
        void server
          .close()
          .then(() => Promise.all(models.map((x) => x.dispose())))
          .then(
            () => {
              console.error('hipattn serve: stopped');
              resolve();
            },
            (e: unknown) => {
              console.error(`hipattn serve: error while shutting down: ${(e as Error).message}`);
              process.exitCode = 1;
              resolve();
            },
          );
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
    // Everything is closed; should a stray handle keep the event loop alive, leave anyway.
    setTimeout(() => process.exit(), 5000).unref();
  });
}
