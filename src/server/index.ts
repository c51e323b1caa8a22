/**
 * The OpenAI-compatible HTTP server (Node only). Safe to import anywhere: fastify and Node's
 * modules load only when `createServer` is called, so browser bundles of hipattn never pull them.
 */
import type { HipServer, ServedModel, ServerOptions } from './server.js';

export type { HipServer, RequestLog, ServedModel, ServerOptions, ServerStats } from './server.js';
export { ApiError, type OpenAIErrorBody } from './openai.js';

/** The Node-only implementation (a variable, so that bundlers leave it out, as runtime/load.ts does). */
const NODE_SERVER: string = './server.js';

/**
 * Creates the server (not yet listening: call `listen()`). `models` are the slots: one model runs
 * one generation at a time; pass several loaded copies to run several at once.
 */
export async function createServer(models: ServedModel | readonly ServedModel[], options: ServerOptions = {}): Promise<HipServer> {
  const { buildServer } = (await import(/* @vite-ignore */ /* webpackIgnore: true */ NODE_SERVER)) as typeof import('./server.js');
  return buildServer(models, options);
}
