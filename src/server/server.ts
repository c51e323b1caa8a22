/**
 * The OpenAI-compatible HTTP server (fastify) in front of loaded models; `createServer` (index.ts) loads this lazily.
 *
 *     const model = await loadModel('models/hip-testbed-mini', { device: 'cpu' });
 *     const server = await createServer(model, { port: 8080 });
 *     const { url } = await server.listen();   // http://127.0.0.1:8080
 *     // … later
 *     await server.close();                    // finishes (or, after the grace period, aborts) what runs
 *     await model.dispose();
 *
 * Every model slot holds one KV cache, so it runs one generation at a time; requests wait in a
 * bounded FIFO queue (429 beyond it). A client that goes away mid-request aborts its generation
 * at once and frees its slot. The server never owns the models: dispose them after close().
 * Besides the API: GET /health (liveness), GET /ready (readiness) and GET /metrics (Prometheus,
 * metrics.ts). Slow or silent clients are cut off by the header, request, keep-alive and idle
 * timeouts; a generation's own time (queue, prefill, a long stream) is never cut.
 */
import { randomUUID, createHash, timingSafeEqual } from 'node:crypto';
import { createReadStream, readdirSync, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, join, resolve as resolvePath } from 'node:path';
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { HipAttnError } from '../errors.js';
import type { HipModel } from '../runtime/model.js';
import { METRICS_CONTENT_TYPE, ServerMetrics } from './metrics.js';
import { ApiError, type EndpointKind, type GenerationRequest, invalid, type OpenAIFinishReason, parseGenerationRequest, promptSize, ResponseShapes, usage } from './openai.js';
import { type Lease, QueueCancelledError, QueueFullError, Scheduler } from './scheduler.js';

/** What the server needs of a model (a HipModel, or a test double wrapping one). */
export type ServedModel = Pick<HipModel, 'name' | 'contextLength' | 'encode' | 'stream'> & Partial<Pick<HipModel, 'attention' | 'chatStopStrings' | 'encodeAsync'>>;

export interface ServerOptions {
  /** Interface to listen on. Default 127.0.0.1 (loopback only); '0.0.0.0' or '::' to listen on the network. */
  host?: string;
  /** TCP port; 0 picks a free one (listen() returns it). Default 8080. */
  port?: number;
  /**
   * When set, the API (every /v1 route), the model files (/model/) and GET /metrics need
   * `Authorization: Bearer <apiKey>`; GET /health, GET /ready and the static app files do not.
   * The check runs on the route that matched, so no spelling of a path (percent-escapes,
   * absolute-form targets) gets around it.
   */
  apiKey?: string;
  /** Requests that may wait while every model slot is busy; beyond that → 429. Default 64. */
  maxQueue?: number;
  /** The id that /v1/models lists and responses name. Default: the model's name. */
  modelId?: string;
  /** Other ids that GET /v1/models/{id} knows (and strictModelId accepts), e.g. the path the model was loaded from. */
  modelAliases?: readonly string[];
  /**
   * The server serves one model, so by default it answers requests whatever their `model` says
   * (as llama-server does: clients written for another server work unchanged). When true, a
   * `model` other than modelId, the model's name or an alias gets 404 model_not_found. Default false.
   */
  strictModelId?: boolean;
  /**
   * Text and chat prompts of more than contextLength × this many characters are refused (400
   * context_length_exceeded) before they are tokenized: such a prompt cannot fit unless its tokens
   * average more characters than this, and tokenizing it would hold the event loop (and memory)
   * for as long as its size asks. Typical text has 3–5 characters per token. Token-id prompts are
   * bounded by the context length itself. Default 16.
   */
  maxPromptCharsPerToken?: number;
  /**
   * On close(): milliseconds to let running generations finish before aborting them
   * (their streams end with an error event, non-streamed requests get 503). Default 30 000.
   */
  shutdownGraceMs?: number;
  /** Largest request body in bytes. Default 16 MiB. */
  bodyLimit?: number;
  /** Seconds sent in Retry-After with a 429. Default 1. */
  retryAfterSeconds?: number;
  /**
   * Milliseconds a client has to send a request's headers (Node's `headersTimeout`); a client
   * that sends them slower (one byte a second, "slowloris") is disconnected. Default 60 000.
   */
  headersTimeoutMs?: number;
  /**
   * Milliseconds a client has to send a whole request, headers and body (Node's
   * `requestTimeout`), 0 for none. It ends when the request has arrived: the answer, such as a
   * long streamed generation, takes as long as it takes. Default 300 000.
   */
  requestTimeoutMs?: number;
  /**
   * Milliseconds a kept-alive connection may sit idle between requests before the server closes
   * it (Node's `keepAliveTimeout`). Behind a load balancer, make it longer than the balancer's
   * own idle timeout (60 s for many), so that the server never closes a connection the balancer
   * is about to reuse. Default 72 000.
   */
  keepAliveTimeoutMs?: number;
  /**
   * Milliseconds of silence on a connection while the server waits for the client, 0 for none:
   * a client that stops sending its request body, or stops reading a response (a stream whose
   * socket does not drain), is disconnected after this long, and its generation stops and frees
   * its slot. Time spent waiting in the queue or computing does not count. Default 60 000.
   */
  idleTimeoutMs?: number;
  /**
   * A folder served as static files at `/` (index.html for `/`), e.g. a browser app's build.
   * API routes take precedence over files of the same path.
   */
  staticDir?: string;
  /**
   * A local model offered to a browser app (e.g. the one `staticDir` serves), read-only: a Hugging
   * Face model directory (only its model files: config, generation config, tokenizer files, chat
   * template, safetensors and their index) or one .gguf file. `GET /model/files.json` lists them
   * (`{ name, files }`), `GET /model/FILE` sends one. With an `apiKey` they need it, like /v1.
   */
  modelFiles?: string;
  /**
   * Called once for every request to a generation endpoint (POST /v1/completions and
   * /v1/chat/completions, under any spelling of their paths), answered or not: those that
   * generated, and those refused with 4xx (validation, 401, 404, 405, 413, 429) or 503. For logging.
   */
  onRequestDone?: (info: RequestLog) => void;
}

export interface RequestLog {
  endpoint: '/v1/completions' | '/v1/chat/completions';
  /** The HTTP status sent (499: the client went away before the answer). */
  status: number;
  /** Whether the request asked for a stream (false when its body was not read). */
  stream: boolean;
  /**
   * 'stop' | 'length' for generations that finished; 'client_closed' | 'shutdown' | 'error' for
   * those cut short; 'rejected' for 429 (queue full); 'refused' for other requests answered with an
   * error before any generation (bad body, wrong method, missing key, …).
   */
  outcome: string;
  promptTokens: number;
  completionTokens: number;
  /** Milliseconds waiting in the queue and in all. */
  queueMs: number;
  totalMs: number;
  /** The error message and its OpenAI `code`, for requests answered with an error. */
  error?: string;
  code?: string;
}

/** Counters reported by GET /health. */
export interface ServerStats {
  status: 'ok' | 'shutting_down';
  model: string;
  /** Generations running now, and requests waiting for a slot. */
  active: number;
  queued: number;
  maxConcurrency: number;
  maxQueue: number;
  requests: {
    /** Generations that ran to a finish reason. */
    completed: number;
    /** Generations or waits cut short because the client went away. */
    clientClosed: number;
    /** Generations aborted (or waits refused) by shutdown. */
    shutdown: number;
    /** Generations that failed with an error (500 or a stream error event). */
    failed: number;
    /** Requests refused with 429. */
    rejected: number;
    /** Requests to the generation endpoints refused with another error before generating (400, 401, 404, 405, 413). */
    refused: number;
  };
  tokens: { prompt: number; completion: number };
}

export interface HipServer {
  readonly app: FastifyInstance;
  readonly modelId: string;
  /** Starts listening; resolves with the address. */
  listen(): Promise<{ url: string; host: string; port: number }>;
  /**
   * Stops accepting connections, refuses queued requests (503), lets running generations finish
   * for up to shutdownGraceMs, then aborts them; resolves when every connection is closed.
   * Idempotent. Does not dispose the models.
   */
  close(): Promise<void>;
  stats(): ServerStats;
  /** The Prometheus exposition text that GET /metrics sends. */
  metrics(): string;
}

const ABORT_CLIENT = 'client_closed';
const ABORT_SHUTDOWN = 'shutdown';

/** Where a generation request stopped, for logs and counters. */
type Outcome = OpenAIFinishReason | typeof ABORT_CLIENT | typeof ABORT_SHUTDOWN | 'error';

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function bearer(header: string | undefined): string | undefined {
  const m = header === undefined ? null : /^Bearer\s+(.+)$/i.exec(header.trim());
  return m ? m[1]!.trim() : undefined;
}

/**
 * Whether a route (its pattern as registered, e.g. '/v1/models/*') needs the API key when one is
 * set: the API, the model's files, and the metrics (they tell how much the server is used;
 * Prometheus sends the key with `authorization: { credentials: KEY }`). Public: /health and
 * /ready (load balancers' probes rarely send headers) and the browser app's files.
 */
export function needsKey(route: string | undefined): boolean {
  return route !== undefined && (route === '/v1' || route.startsWith('/v1/') || route === '/model' || route.startsWith('/model/') || route === '/metrics');
}

/** The generation endpoints, by route pattern. */
const GENERATION_ROUTES: Readonly<Record<string, EndpointKind>> = { '/v1/completions': 'completion', '/v1/chat/completions': 'chat' };

/** Methods a client may send to a route that takes others (answered 405 with Allow). */
const OTHER_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const;

/** A non-negative whole number of milliseconds, or an INVALID_OPTION error naming the option. */
function timeoutOption(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 0) throw new HipAttnError('INVALID_OPTION', `${name} must be a whole number of milliseconds ≥ 0, got ${v}`);
  return v;
}

/** Files of a Hugging Face model directory that a browser needs to load it (no README, no other clutter). */
const MODEL_FILE = /^(config\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|chat_template\.jinja|model\.safetensors\.index\.json|[^/\\]+\.safetensors)$/;

/** What `modelFiles` offers: a model directory's model files, or one .gguf file. */
export function offeredModelFiles(path: string): { name: string; dir: string; files: string[] } {
  const abs = resolvePath(path);
  let st;
  try {
    st = statSync(abs);
  } catch (e) {
    throw new HipAttnError('INVALID_OPTION', `modelFiles: ${path} does not exist`, { cause: e });
  }
  if (st.isFile()) {
    if (!/\.gguf$/i.test(abs)) throw new HipAttnError('INVALID_OPTION', `modelFiles: ${path} is neither a model directory nor a .gguf file`);
    return { name: basename(abs).replace(/\.gguf$/i, ''), dir: dirname(abs), files: [basename(abs)] };
  }
  const files = readdirSync(abs).filter((f) => MODEL_FILE.test(f)).sort();
  if (!files.includes('config.json')) throw new HipAttnError('INVALID_OPTION', `modelFiles: ${path} has no config.json (not a Hugging Face model directory)`);
  return { name: basename(abs), dir: abs, files };
}

/** Maps a model/runtime error to an API error. */
function runtimeError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  const message = e instanceof Error ? e.message : String(e);
  const code = e instanceof HipAttnError ? e.code.toLowerCase() : null;
  return new ApiError(500, `the model failed while generating: ${message}`, 'server_error', null, code);
}

export function buildServer(models: ServedModel | readonly ServedModel[], options: ServerOptions = {}): HipServer {
  const slots: readonly ServedModel[] = Array.isArray(models) ? models : [models as ServedModel];
  if (slots.length === 0) throw new HipAttnError('INVALID_OPTION', 'createServer needs at least one model');
  const first = slots[0]!;
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 8080;
  const maxQueue = options.maxQueue ?? 64;
  const graceMs = options.shutdownGraceMs ?? 30_000;
  const retryAfter = String(options.retryAfterSeconds ?? 1);
  if (!Number.isSafeInteger(port) || port < 0 || port > 65535) throw new HipAttnError('INVALID_OPTION', `port must be an integer in [0, 65535], got ${port}`);
  if (!Number.isSafeInteger(maxQueue) || maxQueue < 0) throw new HipAttnError('INVALID_OPTION', `maxQueue must be an integer ≥ 0, got ${maxQueue}`);
  if (!(graceMs >= 0)) throw new HipAttnError('INVALID_OPTION', `shutdownGraceMs must be ≥ 0, got ${graceMs}`);
  if (options.apiKey !== undefined && options.apiKey === '') throw new HipAttnError('INVALID_OPTION', 'apiKey must not be empty');
  const headersTimeout = timeoutOption('headersTimeoutMs', options.headersTimeoutMs, 60_000);
  const requestTimeout = timeoutOption('requestTimeoutMs', options.requestTimeoutMs, 300_000);
  const keepAliveTimeout = timeoutOption('keepAliveTimeoutMs', options.keepAliveTimeoutMs, 72_000);
  const idleTimeout = timeoutOption('idleTimeoutMs', options.idleTimeoutMs, 60_000);
  if (headersTimeout < 1) throw new HipAttnError('INVALID_OPTION', 'headersTimeoutMs must be at least 1');
  if (requestTimeout > 0 && headersTimeout > requestTimeout) {
    throw new HipAttnError('INVALID_OPTION', `headersTimeoutMs (${headersTimeout}) must not be longer than requestTimeoutMs (${requestTimeout})`);
  }
  const charsPerToken = options.maxPromptCharsPerToken ?? 16;
  if (!(charsPerToken >= 1)) throw new HipAttnError('INVALID_OPTION', `maxPromptCharsPerToken must be at least 1, got ${charsPerToken}`);
  const modelId = options.modelId ?? first.name;
  const accepted = new Set([modelId, first.name, ...(options.modelAliases ?? [])]);
  const strictModel = options.strictModelId ?? false;
  const contextLength = Math.min(...slots.map((m) => m.contextLength));
  const maxPromptChars = Math.floor(contextLength * charsPerToken);
  const fingerprint = `hipattn_${first.attention?.method ?? 'model'}`;
  const keyHash = options.apiKey === undefined ? undefined : sha256(options.apiKey);
  const startedAt = Math.floor(Date.now() / 1000);

  const scheduler = new Scheduler(slots, maxQueue);
  const running = new Set<AbortController>();
  const counters = { completed: 0, clientClosed: 0, shutdown: 0, failed: 0, rejected: 0, refused: 0, promptTokens: 0, completionTokens: 0 };
  const metrics = new ServerMetrics();
  let closing: Promise<void> | undefined;

  const app = Fastify({
    logger: false,
    bodyLimit: options.bodyLimit ?? 16 * 2 ** 20,
    // Requests arriving on kept-alive connections after close() get 503 from fastify.
    return503OnClosing: true,
    forceCloseConnections: false,
    http: {
      headersTimeout: headersTimeout,
      requestTimeout: requestTimeout,
      // Node looks for connections past headersTimeout / requestTimeout this often (its default, 30 s,
      // would let a slow client stay that much longer than its timeout).
      connectionsCheckingInterval: Math.max(10, Math.min(30_000, Math.floor(Math.min(headersTimeout, requestTimeout || Infinity) / 4))),
    },
  });
  // Set on the server itself: fastify reads 0 in its own options as "its default".
  app.server.keepAliveTimeout = keepAliveTimeout;
  app.server.requestTimeout = requestTimeout;
  app.server.headersTimeout = headersTimeout;
  app.server.setTimeout(idleTimeout);

  /** Requests already counted and logged (by handle(), which knows more than the onResponse hook). */
  const recorded = new WeakSet<FastifyRequest>();
  /** The error a request was answered with, for its log record. */
  const answeredWith = new WeakMap<FastifyRequest, ApiError>();

  // Any content type is read as JSON (curl -d sends application/x-www-form-urlencoded), with
  // fastify's prototype-poisoning checks.
  app.addContentTypeParser('*', { parseAs: 'string' }, app.getDefaultJsonParser('error', 'error'));

  app.setErrorHandler((error: FastifyError | ApiError, request, reply) => {
    if (error instanceof ApiError) {
      answeredWith.set(request, error);
      void reply.code(error.status).headers(error.headers).send(error.body());
      return;
    }
    const status = typeof error.statusCode === 'number' && error.statusCode >= 400 ? error.statusCode : 500;
    let api: ApiError;
    if (error.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error instanceof SyntaxError) {
      api = new ApiError(400, `the request body is not valid JSON: ${error.message}`, 'invalid_request_error', null, 'invalid_json');
    } else if (error.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
      api = new ApiError(400, 'the request body is empty; send a JSON object', 'invalid_request_error', null, 'invalid_json');
    } else if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      api = new ApiError(413, `the request body is larger than the server's limit of ${app.initialConfig.bodyLimit} bytes`, 'invalid_request_error', null, 'request_too_large');
    } else if (status < 500) {
      api = new ApiError(status, error.message, 'invalid_request_error', null, error.code ? error.code.toLowerCase() : null);
    } else {
      api = new ApiError(500, `internal error: ${error.message}`, 'server_error');
    }
    answeredWith.set(request, api);
    void reply.code(api.status).send(api.body());
  });

  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(new ApiError(404, `no route ${request.method} ${request.url.split('?')[0]}`, 'invalid_request_error', null, 'not_found').body());
  });

  // Authorised on the route that matched, not on the raw URL: the router decodes percent-escapes
  // and accepts absolute-form targets (`POST http://host/v1/…`), so `/%761/completions` reaches
  // the /v1 handlers too. Public with a key set: GET /health and the browser app's static files
  // (its code, no secrets); the API (/v1) and the model's weights (/model/) need the key.
  app.addHook('onRequest', async (request, reply) => {
    if (keyHash === undefined || !needsKey(request.routeOptions.url)) return;
    const given = bearer(request.headers.authorization);
    if (given === undefined || !timingSafeEqual(sha256(given), keyHash)) {
      const e = new ApiError(
        401,
        given === undefined ? "no API key given: send the header 'Authorization: Bearer <key>'" : 'incorrect API key provided',
        'invalid_request_error',
        null,
        'invalid_api_key',
      );
      answeredWith.set(request, e);
      return reply.code(401).header('www-authenticate', 'Bearer').send(e.body());
    }
  });

  /** Counts a finished request and, for the generation endpoints, hands its record to onRequestDone. */
  function record(request: FastifyRequest, status: number, log: RequestLog | undefined): void {
    recorded.add(request);
    metrics.requests.add({ route: request.routeOptions.url ?? 'unmatched', status: String(status) }, 1);
    if (log) options.onRequestDone?.(log);
  }

  // Every answer that handle() did not record itself: errors before a generation (validation,
  // 401, 405, 413, …) and every other route.
  app.addHook('onResponse', async (request, reply) => {
    if (recorded.has(request)) return;
    const kind = request.routeOptions.url === undefined ? undefined : GENERATION_ROUTES[request.routeOptions.url];
    const status = reply.statusCode;
    let log: RequestLog | undefined;
    if (kind !== undefined) {
      const error = answeredWith.get(request);
      if (status >= 400 && status < 500) counters.refused++;
      const body = request.body as { stream?: unknown } | undefined;
      log = {
        endpoint: kind === 'chat' ? '/v1/chat/completions' : '/v1/completions',
        status,
        stream: typeof body === 'object' && body !== null && body.stream === true,
        outcome: status >= 500 ? 'error' : 'refused',
        promptTokens: 0,
        completionTokens: 0,
        queueMs: 0,
        totalMs: reply.elapsedTime,
        ...(error ? { error: error.message, ...(error.code !== null ? { code: error.code } : {}) } : {}),
      };
    }
    record(request, status, log);
  });

  function stats(): ServerStats {
    return {
      status: closing ? 'shutting_down' : 'ok',
      model: modelId,
      active: scheduler.active,
      queued: scheduler.queued,
      maxConcurrency: scheduler.capacity,
      maxQueue,
      requests: {
        completed: counters.completed,
        clientClosed: counters.clientClosed,
        shutdown: counters.shutdown,
        failed: counters.failed,
        rejected: counters.rejected,
        refused: counters.refused,
      },
      tokens: { prompt: counters.promptTokens, completion: counters.completionTokens },
    };
  }

  /** Why the server would not take a new request now, or undefined when it would. */
  function notReady(): 'shutting_down' | 'queue_full' | undefined {
    if (closing) return 'shutting_down';
    if (scheduler.active >= scheduler.capacity && scheduler.queued >= maxQueue) return 'queue_full';
    return undefined;
  }

  function metricsText(): string {
    return metrics.render({ running: scheduler.active, waiting: scheduler.queued, slots: scheduler.capacity, queueCapacity: maxQueue, ready: notReady() ? 0 : 1 });
  }

  // Liveness: the process answers (200 while it runs, shutting down or not).
  app.get('/health', async () => stats());
  // Readiness: whether a load balancer should send this replica work now.
  app.get('/ready', async (_request, reply) => {
    const reason = notReady();
    if (reason) return reply.code(503).header('retry-after', retryAfter).send({ ready: false, reason });
    return { ready: true };
  });
  app.get('/metrics', async (_request, reply) => reply.type(METRICS_CONTENT_TYPE).send(metricsText()));

  const modelObject = () => ({ id: modelId, object: 'model', created: startedAt, owned_by: 'hipattn', max_model_len: contextLength });
  app.get('/v1/models', async () => ({ object: 'list', data: [modelObject()] }));
  app.get<{ Params: { '*': string } }>('/v1/models/*', async (request) => {
    const id = request.params['*'];
    if (!accepted.has(id)) throw new ApiError(404, `the model '${id}' does not exist; this server serves '${modelId}'`, 'invalid_request_error', 'model', 'model_not_found');
    return modelObject();
  });

  /** Validates, bounds, tokenizes and checks the context; throws ApiError. */
  async function prepare(kind: EndpointKind, body: unknown): Promise<{ req: GenerationRequest; ids: number[]; maxTokens: number }> {
    const req = parseGenerationRequest(kind, body);
    if (strictModel && req.model !== undefined && !accepted.has(req.model)) {
      throw new ApiError(404, `the model '${req.model}' does not exist; this server serves '${modelId}'`, 'invalid_request_error', 'model', 'model_not_found');
    }
    if (req.maxTokens !== undefined && req.maxTokens > contextLength) {
      throw invalid(req.maxTokensParam, `'${req.maxTokensParam}' is ${req.maxTokens}, more than the model's context length ${contextLength}`);
    }
    // Cheap bounds first: the tokenizer runs on the event loop, in time and memory that grow with
    // the prompt, so a prompt that cannot fit is refused before it is tokenized.
    const size = promptSize(req.input);
    if ('ids' in size && size.ids >= contextLength) {
      throw invalid(req.inputParam, `this model's maximum context length is ${contextLength} tokens, but '${req.inputParam}' has ${size.ids} tokens; shorten it`, 'context_length_exceeded');
    }
    if ('chars' in size && size.chars > maxPromptChars) {
      throw invalid(
        req.inputParam,
        `this model's maximum context length is ${contextLength} tokens, but '${req.inputParam}' has ${size.chars} characters, ` +
          `more than the ${maxPromptChars} (${charsPerToken} per token) this server tokenizes for it; shorten it`,
        'context_length_exceeded',
      );
    }
    // Let what waits on the event loop (other requests, /health) in before the tokenizer holds it.
    await nextMacrotask();
    let ids: number[];
    try {
      const input = req.input;
      const prompt = 'text' in input ? input.text : 'ids' in input ? { ids: input.ids } : { messages: input.messages };
      // Long prompts are tokenized in a worker thread where the model offers one (HipModel from
      // the built package), so /health and other requests are answered meanwhile.
      ids = first.encodeAsync ? await first.encodeAsync(prompt) : first.encode(prompt);
    } catch (e) {
      if (e instanceof HipAttnError) throw invalid(req.inputParam, `'${req.inputParam}': ${e.message}`);
      throw e;
    }
    if (ids.length === 0) throw invalid(req.inputParam, `'${req.inputParam}' is empty after tokenization and the model has no BOS token`);
    const room = contextLength - ids.length;
    if (room < 1) {
      throw invalid(
        req.inputParam,
        `this model's maximum context length is ${contextLength} tokens, but '${req.inputParam}' has ${ids.length} tokens; shorten it`,
        'context_length_exceeded',
      );
    }
    if (req.maxTokens !== undefined && req.maxTokens > room) {
      throw invalid(
        req.maxTokensParam,
        `this model's maximum context length is ${contextLength} tokens, but you requested ${ids.length + req.maxTokens} tokens ` +
          `(${ids.length} in '${req.inputParam}', ${req.maxTokens} in '${req.maxTokensParam}'); reduce '${req.maxTokensParam}' or the prompt`,
        'context_length_exceeded',
      );
    }
    // OpenAI's defaults: 16 tokens for completions, the rest of the context for chat.
    const maxTokens = req.maxTokens ?? (kind === 'completion' ? Math.min(16, room) : room);
    return { req, ids, maxTokens };
  }

  async function handle(kind: EndpointKind, request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const t0 = performance.now();
    const endpoint = kind === 'chat' ? '/v1/chat/completions' : '/v1/completions';
    const { req, ids, maxTokens } = await prepare(kind, request.body);
    const res = reply.raw;
    // Waiting in the queue and computing are the server's time, not the client's silence: the
    // idle timeout applies again only while the server waits for the client to read (see sse).
    res.socket?.setTimeout(0);
    const abort = new AbortController();
    const onClose = (): void => {
      if (!res.writableFinished) abort.abort(ABORT_CLIENT);
    };
    res.on('close', onClose);
    const log = (status: number, outcome: string, completionTokens: number, queueMs: number, error?: ApiError): void => {
      if (outcome !== 'rejected') metrics.generations.add({ outcome }, 1);
      if (status !== 429) metrics.requestSeconds.observe((performance.now() - t0) / 1000);
      record(request, status, {
        endpoint,
        status,
        stream: req.stream,
        outcome,
        promptTokens: ids.length,
        completionTokens,
        queueMs,
        totalMs: performance.now() - t0,
        ...(error !== undefined ? { error: error.message, ...(error.code !== null ? { code: error.code } : {}) } : {}),
      });
    };

    let lease: Lease<ServedModel>;
    try {
      lease = await scheduler.acquire(abort.signal);
    } catch (e) {
      res.off('close', onClose);
      if (e instanceof QueueFullError) {
        counters.rejected++;
        const error = new ApiError(429, `${e.message} (max queue ${maxQueue}); retry later`, 'rate_limit_error', null, 'rate_limit_exceeded', { 'retry-after': retryAfter });
        log(429, 'rejected', 0, performance.now() - t0, error);
        throw error;
      }
      if (e instanceof QueueCancelledError && e.reason === 'closed') {
        counters.shutdown++;
        const error = new ApiError(503, e.message, 'server_error', null, 'server_shutting_down', { 'retry-after': retryAfter });
        log(503, ABORT_SHUTDOWN, 0, performance.now() - t0, error);
        throw error;
      }
      if (e instanceof QueueCancelledError) {
        // The client went away while waiting: nobody to answer.
        counters.clientClosed++;
        log(499, ABORT_CLIENT, 0, performance.now() - t0);
        reply.hijack();
        res.destroy();
        return;
      }
      throw e;
    }
    const queueMs = performance.now() - t0;
    metrics.queueSeconds.observe(queueMs / 1000);
    running.add(abort);
    counters.promptTokens += ids.length;
    metrics.promptTokens.add({}, ids.length);
    // Responses name the model that answered, whatever the request's `model` said.
    const shapes = new ResponseShapes(kind, modelId, fingerprint, req.includeUsage, randomUUID().replaceAll('-', ''));
    let completionTokens = 0;
    let outcome: Outcome = 'error';
    let failure: ApiError | undefined;
    let text = '';

    // Server-Sent Events: headers go out once the generation starts (errors before it are plain HTTP errors).
    // A client that stops reading (the socket does not drain) for idleTimeout is disconnected,
    // which aborts the generation: it would otherwise hold its slot for as long as it likes.
    const sse = async (data: unknown): Promise<void> => {
      if (res.destroyed || res.writableEnded) return;
      if (!res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`)) {
        await new Promise<void>((resolve) => {
          const stalled = idleTimeout > 0 ? setTimeout(() => res.destroy(), idleTimeout) : undefined;
          const done = (): void => {
            clearTimeout(stalled);
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    };
    if (req.stream) {
      reply.hijack();
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      const head = shapes.first();
      if (head) await sse(head);
      else res.flushHeaders();
    }

    const tStart = performance.now();
    let tFirst: number | undefined;
    try {
      const it = lease.slot.stream(
        { ids },
        {
          maxNewTokens: maxTokens,
          temperature: req.temperature,
          topP: req.topP,
          topK: req.topK,
          // Without a seed, sampling differs from request to request (as OpenAI's does).
          seed: req.seed ?? Math.floor(Math.random() * 2 ** 32),
          // Chat with the ChatML default template also ends at <|im_end|> (as the library's chat does).
          stopStrings: kind === 'chat' && (lease.slot.chatStopStrings?.length ?? 0) > 0 ? [...(req.stop ?? []), ...lease.slot.chatStopStrings!] : req.stop,
          ...(req.ignoreEos ? { stopTokenIds: [] } : {}),
          signal: abort.signal,
        },
      );
      try {
        for (;;) {
          const r = await it.next();
          if (tFirst === undefined) {
            tFirst = performance.now();
            metrics.timeToFirstToken.observe((tFirst - tStart) / 1000);
          }
          if (r.done) {
            completionTokens = r.value.ids.length;
            if (r.value.finishReason !== 'aborted') outcome = r.value.finishReason;
            break;
          }
          if (r.value.id !== null) completionTokens++;
          if (r.value.text !== '') {
            text += r.value.text;
            if (req.stream) await sse(shapes.delta(r.value.text));
          }
          // The CPU forward pass is synchronous: let sockets, timers and new requests in between tokens.
          await nextMacrotask();
          if (abort.signal.aborted) break;
        }
      } finally {
        if (abort.signal.aborted) await it.return(undefined as never).catch(() => undefined);
      }
      if (abort.signal.aborted) outcome = abort.signal.reason === ABORT_SHUTDOWN ? ABORT_SHUTDOWN : ABORT_CLIENT;
    } catch (e) {
      if (abort.signal.aborted) outcome = abort.signal.reason === ABORT_SHUTDOWN ? ABORT_SHUTDOWN : ABORT_CLIENT;
      else {
        outcome = 'error';
        failure = runtimeError(e);
      }
    } finally {
      running.delete(abort);
      lease.release();
      res.off('close', onClose);
    }
    const tEnd = performance.now();
    metrics.prefillSeconds.add({}, ((tFirst ?? tEnd) - tStart) / 1000);
    metrics.decodeSeconds.add({}, (tEnd - (tFirst ?? tEnd)) / 1000);

    counters.completionTokens += completionTokens;
    metrics.completionTokens.add({}, completionTokens);
    if (outcome === ABORT_CLIENT) counters.clientClosed++;
    else if (outcome === ABORT_SHUTDOWN) counters.shutdown++;
    else if (outcome === 'error') counters.failed++;
    else counters.completed++;

    const u = usage(ids.length, completionTokens);
    if (outcome === ABORT_SHUTDOWN) {
      failure = new ApiError(503, `the server is shutting down; the generation was stopped after ${completionTokens} tokens`, 'server_error', null, 'server_shutting_down');
    }
    if (req.stream) {
      if (outcome === 'stop' || outcome === 'length') {
        await sse(shapes.finish(outcome));
        if (req.includeUsage) await sse(shapes.usageChunk(u));
        await sse('[DONE]');
      } else if (failure) {
        await sse(failure.body());
        await sse('[DONE]');
      }
      if (!res.destroyed) res.end();
      log(outcome === ABORT_CLIENT ? 499 : 200, outcome, completionTokens, queueMs, failure);
      return;
    }
    if (outcome === ABORT_CLIENT) {
      log(499, outcome, completionTokens, queueMs);
      reply.hijack();
      res.destroy();
      return;
    }
    if (failure) {
      log(failure.status, outcome, completionTokens, queueMs, failure);
      throw failure;
    }
    log(200, outcome, completionTokens, queueMs);
    await reply.send(shapes.complete(text, outcome as OpenAIFinishReason, u));
  }

  app.post('/v1/completions', (request, reply) => handle('completion', request, reply));
  app.post('/v1/chat/completions', (request, reply) => handle('chat', request, reply));

  // A known path with another method gets 405 and the methods it takes (not 404, nor an attempt
  // to read a body it has no use for).
  const methodsOf: Record<string, readonly string[]> = {
    '/v1/completions': ['POST'],
    '/v1/chat/completions': ['POST'],
    '/v1/models': ['GET', 'HEAD'],
    '/v1/models/*': ['GET', 'HEAD'],
    '/health': ['GET', 'HEAD'],
    '/ready': ['GET', 'HEAD'],
    '/metrics': ['GET', 'HEAD'],
  };
  for (const [url, allowed] of Object.entries(methodsOf)) {
    const notAllowed = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
      const path = request.url.split('?')[0];
      const e = new ApiError(405, `${request.method} is not allowed on ${path}; it takes ${allowed.join(', ')}`, 'invalid_request_error', null, 'method_not_allowed');
      answeredWith.set(request, e);
      return reply.code(405).header('allow', allowed.join(', ')).send(e.body());
    };
    app.route({
      method: OTHER_METHODS.filter((m) => !allowed.includes(m)),
      url,
      // Answered before any body is read (after the API key check, so that a protected path
      // tells nothing without the key).
      onRequest: notAllowed,
      handler: notAllowed,
    });
  }

  if (options.staticDir !== undefined) {
    const root = resolvePath(options.staticDir);
    void app.register(import('@fastify/static'), { root, prefix: '/', index: ['index.html'] });
  }

  if (options.modelFiles !== undefined) {
    const offered = offeredModelFiles(options.modelFiles);
    app.get('/model/files.json', async () => ({ name: offered.name, files: offered.files }));
    app.get<{ Params: { file: string } }>('/model/:file', async (request, reply) => {
      const file = request.params.file;
      if (!offered.files.includes(file)) throw new ApiError(404, `no model file ${file} (see /model/files.json)`, 'invalid_request_error', null, 'not_found');
      const path = join(offered.dir, file);
      const { size } = await stat(path);
      return reply
        .type(file.endsWith('.json') ? 'application/json; charset=utf-8' : 'application/octet-stream')
        .header('content-length', size)
        .header('cache-control', 'no-cache')
        .send(createReadStream(path));
    });
  }

  async function close(): Promise<void> {
    closing ??= (async () => {
      scheduler.close('the server is shutting down');
      const grace = setTimeout(() => {
        for (const a of running) a.abort(ABORT_SHUTDOWN);
      }, graceMs);
      grace.unref();
      // fastify.close() stops accepting connections at once and resolves when the open ones have ended.
      const closed = app.close();
      await scheduler.idle();
      clearTimeout(grace);
      // Responses are complete: let them flush, then drop the kept-alive connections.
      await nextMacrotask();
      app.server.closeIdleConnections();
      const force = setTimeout(() => app.server.closeAllConnections(), 2000);
      force.unref();
      await closed;
      clearTimeout(force);
    })();
    return closing;
  }

  return {
    app,
    modelId,
    async listen() {
      await app.listen({ host, port });
      const addr = app.server.address();
      const actualPort = typeof addr === 'object' && addr !== null ? addr.port : port;
      const urlHost = host.includes(':') ? `[${host}]` : host;
      return { url: `http://${urlHost}:${actualPort}`, host, port: actualPort };
    },
    close,
    stats,
    metrics: metricsText,
  };
}
