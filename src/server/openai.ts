/**
 * The OpenAI wire format: request validation for /v1/completions and /v1/chat/completions
 * (each error names its field, as OpenAI's `param` does), error bodies, and response shapes.
 */
import type { ChatMessage } from '../model/chat-template.js';

/** OpenAI's error body. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An error with an HTTP status and an OpenAI-style body. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (e.g. Retry-After). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A 400 invalid_request_error naming `param`. */
export function invalid(param: string | null, message: string, code: string | null = null): ApiError {
  return new ApiError(400, message, 'invalid_request_error', param, code);
}

export type EndpointKind = 'completion' | 'chat';

/** A validated generation request, before tokenization. */
export interface GenerationRequest {
  kind: EndpointKind;
  /** The `model` field, if given. */
  model: string | undefined;
  /** The prompt: text, token ids, or chat messages. */
  input: { text: string } | { ids: number[] } | { messages: ChatMessage[] };
  /** The field that holds the prompt ('prompt' or 'messages'), for error messages. */
  inputParam: 'prompt' | 'messages';
  /** Requested completion tokens, if given, and the field that gave it. */
  maxTokens: number | undefined;
  maxTokensParam: 'max_tokens' | 'max_completion_tokens';
  temperature: number | undefined;
  topP: number | undefined;
  topK: number | undefined;
  seed: number | undefined;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  /** Extension (as vLLM): keep generating past end-of-sequence tokens. */
  ignoreEos: boolean;
}

type Body = Record<string, unknown>;

/**
 * Characters of a text or chat prompt before tokenization (every role, name and content of chat
 * messages; the chat template only adds to them), or the number of token ids: a cheap size to
 * bound before the prompt is tokenized.
 */
export function promptSize(input: GenerationRequest['input']): { chars: number } | { ids: number } {
  if ('text' in input) return { chars: input.text.length };
  if ('ids' in input) return { ids: input.ids.length };
  let chars = 0;
  for (const m of input.messages) chars += m.role.length + m.content.length + (typeof m.name === 'string' ? m.name.length : 0);
  return { chars };
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** A field's value, with null read as absent (OpenAI accepts null for every optional field). */
function get(body: Body, name: string): unknown {
  const v = body[name];
  return v === null ? undefined : v;
}

function optNumber(body: Body, name: string, min: number, max: number, { exclusiveMin = false } = {}): number | undefined {
  const v = get(body, name);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(name, `'${name}' must be a number, got ${typeName(v)}`);
  if ((exclusiveMin ? v <= min : v < min) || v > max) {
    throw invalid(name, `'${name}' must be ${exclusiveMin ? 'greater than' : 'at least'} ${min} and at most ${max}, got ${v}`);
  }
  return v;
}

function optInt(body: Body, name: string, min: number, max: number = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = get(body, name);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw invalid(name, `'${name}' must be an integer, got ${typeof v === 'number' ? v : typeName(v)}`);
  if (v < min || v > max) {
    const range = max >= Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `between ${min} and ${max}`;
    throw invalid(name, `'${name}' must be an integer ${range}, got ${v}`);
  }
  return v;
}

function optBool(body: Body, name: string): boolean | undefined {
  const v = get(body, name);
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw invalid(name, `'${name}' must be a boolean, got ${typeName(v)}`);
  return v;
}

function optString(body: Body, name: string): string | undefined {
  const v = get(body, name);
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalid(name, `'${name}' must be a string, got ${typeName(v)}`);
  return v;
}

/** Rejects a field whose value asks for something this server cannot do (rather than silently ignoring it). */
function unsupported(body: Body, name: string, isDefault: (v: unknown) => boolean, what: string): void {
  const v = get(body, name);
  if (v !== undefined && !isDefault(v)) throw invalid(name, `'${name}' is not supported by this server (${what})`);
}

const MAX_STOP = 16;

function parseStop(body: Body): string[] {
  const v = get(body, 'stop');
  if (v === undefined) return [];
  if (typeof v === 'string') return v === '' ? [] : [v];
  if (!Array.isArray(v)) throw invalid('stop', `'stop' must be a string or an array of strings, got ${typeName(v)}`);
  if (v.length > MAX_STOP) throw invalid('stop', `'stop' takes at most ${MAX_STOP} sequences, got ${v.length}`);
  v.forEach((s, i) => {
    if (typeof s !== 'string') throw invalid(`stop[${i}]`, `'stop[${i}]' must be a string, got ${typeName(s)}`);
  });
  return (v as string[]).filter((s) => s !== '');
}

function isIntArray(v: unknown[]): v is number[] {
  return v.every((x) => typeof x === 'number' && Number.isInteger(x));
}

function parsePrompt(body: Body): GenerationRequest['input'] {
  const p = body.prompt;
  if (p === undefined || p === null) throw invalid('prompt', "'prompt' is required: a string or an array of token ids");
  if (typeof p === 'string') return { text: p };
  if (!Array.isArray(p)) throw invalid('prompt', `'prompt' must be a string or an array of token ids, got ${typeName(p)}`);
  if (p.length > 0 && p.every((x) => typeof x === 'number')) {
    if (!isIntArray(p)) throw invalid('prompt', "'prompt' as an array of token ids must hold integers");
    return { ids: p };
  }
  if (p.length === 0) throw invalid('prompt', "'prompt' is an empty array: give a string or at least one token id");
  // An array of prompts (strings or token arrays): one is the same as the bare prompt; more is a batch.
  if (p.every((x) => typeof x === 'string' || (Array.isArray(x) && isIntArray(x)))) {
    if (p.length > 1) throw invalid('prompt', `'prompt' holds ${p.length} prompts; this server takes one prompt per request (send them as separate requests)`);
    const only = p[0] as string | number[];
    if (typeof only === 'string') return { text: only };
    if (only.length === 0) throw invalid('prompt', "'prompt[0]' is an empty token array");
    return { ids: only };
  }
  throw invalid('prompt', "'prompt' must be a string, an array of token ids, or a one-element array of either");
}

function parseMessages(body: Body): ChatMessage[] {
  const m = body.messages;
  if (m === undefined || m === null) throw invalid('messages', "'messages' is required: an array of {role, content}");
  if (!Array.isArray(m)) throw invalid('messages', `'messages' must be an array, got ${typeName(m)}`);
  if (m.length === 0) throw invalid('messages', "'messages' must hold at least one message");
  return m.map((msg: unknown, i): ChatMessage => {
    const at = `messages[${i}]`;
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) throw invalid(at, `'${at}' must be an object with 'role' and 'content', got ${typeName(msg)}`);
    const { role, content, name } = msg as Record<string, unknown>;
    if (typeof role !== 'string' || role === '') throw invalid(`${at}.role`, `'${at}.role' must be a non-empty string, got ${typeName(role)}`);
    let text: string;
    if (typeof content === 'string') text = content;
    else if (content === null || content === undefined) {
      if (role !== 'assistant') throw invalid(`${at}.content`, `'${at}.content' is required for a '${role}' message`);
      text = '';
    } else if (Array.isArray(content)) {
      text = content
        .map((part: unknown, j) => {
          const pat = `${at}.content[${j}]`;
          if (typeof part !== 'object' || part === null) throw invalid(pat, `'${pat}' must be a content part object, got ${typeName(part)}`);
          const { type, text: t } = part as Record<string, unknown>;
          if (type !== 'text') throw invalid(`${pat}.type`, `'${pat}.type' is ${JSON.stringify(type)}; this server takes only text content parts`);
          if (typeof t !== 'string') throw invalid(`${pat}.text`, `'${pat}.text' must be a string, got ${typeName(t)}`);
          return t;
        })
        .join('\n');
    } else throw invalid(`${at}.content`, `'${at}.content' must be a string or an array of text parts, got ${typeName(content)}`);
    const out: ChatMessage = { role, content: text };
    if (name !== undefined && name !== null) {
      if (typeof name !== 'string') throw invalid(`${at}.name`, `'${at}.name' must be a string, got ${typeName(name)}`);
      out.name = name;
    }
    return out;
  });
}

/** Validates a request body for `kind`. Throws ApiError (400) naming the field. */
export function parseGenerationRequest(kind: EndpointKind, body: unknown): GenerationRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw invalid(null, `the request body must be a JSON object, got ${body === undefined ? 'nothing' : typeName(body)}`);
  }
  const b = body as Body;
  const model = optString(b, 'model');
  const input = kind === 'chat' ? { messages: parseMessages(b) } : parsePrompt(b);

  const n = optInt(b, 'n', 1, 128);
  if (n !== undefined && n !== 1) throw invalid('n', `'n' must be 1 on this server (one KV cache, one sequence per request), got ${n}`);
  unsupported(b, 'best_of', (v) => v === 1, 'only best_of = 1');
  unsupported(b, 'echo', (v) => v === false, 'echo of the prompt');
  unsupported(b, 'suffix', (v) => v === '', 'insertion with a suffix');
  unsupported(b, 'logprobs', (v) => v === false || v === 0, 'log probabilities');
  unsupported(b, 'top_logprobs', (v) => v === 0, 'log probabilities');
  unsupported(b, 'presence_penalty', (v) => v === 0, 'only 0');
  unsupported(b, 'frequency_penalty', (v) => v === 0, 'only 0');
  unsupported(b, 'logit_bias', (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0, 'logit bias');
  unsupported(b, 'tools', (v) => Array.isArray(v) && v.length === 0, 'tool calls');
  unsupported(b, 'functions', (v) => Array.isArray(v) && v.length === 0, 'function calls');
  unsupported(
    b,
    'response_format',
    (v) => typeof v === 'object' && v !== null && (v as { type?: unknown }).type === 'text',
    "only {type: 'text'}",
  );
  const user = get(b, 'user');
  if (user !== undefined && typeof user !== 'string') throw invalid('user', `'user' must be a string, got ${typeName(user)}`);

  const maxTokensField = kind === 'chat' && get(b, 'max_completion_tokens') !== undefined ? 'max_completion_tokens' : 'max_tokens';
  const maxTokens = optInt(b, 'max_tokens', 1);
  const maxCompletion = kind === 'chat' ? optInt(b, 'max_completion_tokens', 1) : undefined;

  const stream = optBool(b, 'stream') ?? false;
  let includeUsage = false;
  const so = get(b, 'stream_options');
  if (so !== undefined) {
    if (!stream) throw invalid('stream_options', "'stream_options' is only allowed when 'stream' is true");
    if (typeof so !== 'object' || Array.isArray(so)) throw invalid('stream_options', `'stream_options' must be an object, got ${typeName(so)}`);
    const iu = (so as Body).include_usage;
    if (iu !== undefined && iu !== null && typeof iu !== 'boolean') {
      throw invalid('stream_options.include_usage', `'stream_options.include_usage' must be a boolean, got ${typeName(iu)}`);
    }
    includeUsage = iu === true;
  }

  const topK = optInt(b, 'top_k', -1);
  return {
    kind,
    model,
    input,
    inputParam: kind === 'chat' ? 'messages' : 'prompt',
    maxTokens: maxCompletion ?? maxTokens,
    maxTokensParam: maxTokensField,
    temperature: optNumber(b, 'temperature', 0, 2),
    topP: optNumber(b, 'top_p', 0, 1, { exclusiveMin: true }),
    // -1 and 0 both mean "no top-k" (vLLM uses -1).
    topK: topK === undefined || topK <= 0 ? undefined : topK,
    seed: optInt(b, 'seed', Number.MIN_SAFE_INTEGER),
    stop: parseStop(b),
    stream,
    includeUsage,
    ignoreEos: optBool(b, 'ignore_eos') ?? false,
  };
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usage(promptTokens: number, completionTokens: number): Usage {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

export type OpenAIFinishReason = 'stop' | 'length';

/** Shapes of the responses and stream chunks, for one request. */
export class ResponseShapes {
  readonly id: string;
  readonly created = Math.floor(Date.now() / 1000);

  constructor(
    readonly kind: EndpointKind,
    readonly model: string,
    readonly fingerprint: string,
    readonly includeUsage: boolean,
    requestId: string,
  ) {
    this.id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${requestId}`;
  }

  private object(chunk: boolean): string {
    if (this.kind === 'chat') return chunk ? 'chat.completion.chunk' : 'chat.completion';
    return 'text_completion';
  }

  /** A complete (non-streamed) response. */
  complete(text: string, finishReason: OpenAIFinishReason, u: Usage): Record<string, unknown> {
    const choice =
      this.kind === 'chat'
        ? { index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: finishReason }
        : { text, index: 0, logprobs: null, finish_reason: finishReason };
    return { id: this.id, object: this.object(false), created: this.created, model: this.model, system_fingerprint: this.fingerprint, choices: [choice], usage: u };
  }

  private chunk(choices: unknown[]): Record<string, unknown> {
    const c: Record<string, unknown> = { id: this.id, object: this.object(true), created: this.created, model: this.model, system_fingerprint: this.fingerprint, choices };
    if (this.includeUsage) c.usage = null;
    return c;
  }

  /** The first chunk of a chat stream (the assistant role), or null for completions. */
  first(): Record<string, unknown> | null {
    if (this.kind !== 'chat') return null;
    return this.chunk([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
  }

  /** A chunk with generated text. */
  delta(text: string): Record<string, unknown> {
    return this.chunk([this.kind === 'chat' ? { index: 0, delta: { content: text }, logprobs: null, finish_reason: null } : { text, index: 0, logprobs: null, finish_reason: null }]);
  }

  /** The chunk that ends the choice. */
  finish(finishReason: OpenAIFinishReason): Record<string, unknown> {
    return this.chunk([this.kind === 'chat' ? { index: 0, delta: {}, logprobs: null, finish_reason: finishReason } : { text: '', index: 0, logprobs: null, finish_reason: finishReason }]);
  }

  /** The last chunk when stream_options.include_usage is true: no choices, the usage. */
  usageChunk(u: Usage): Record<string, unknown> {
    return { ...this.chunk([]), usage: u };
  }
}
