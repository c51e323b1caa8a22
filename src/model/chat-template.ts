/**
 * Chat templates: the model's Jinja template (tokenizer_config.json `chat_template`, a
 * chat_template.jinja file, or GGUF `tokenizer.chat_template`) rendered with @huggingface/jinja,
 * the way transformers' apply_chat_template does.
 */
import { Template } from '@huggingface/jinja';
import { HipAttnError } from '../errors.js';
import type { TextTokenizer } from './tokenizer.js';

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

export interface ChatTemplateOptions {
  /** End with the header of an assistant turn, so generation writes the reply. Default true. */
  addGenerationPrompt?: boolean;
  /** Extra variables for the template (tools, documents, date_string, …). */
  variables?: Record<string, unknown>;
}

const compiled = new Map<string, Template>();

function compile(source: string): Template {
  let t = compiled.get(source);
  if (!t) {
    try {
      t = new Template(source);
    } catch (e) {
      throw new HipAttnError('TOKENIZER', `the model's chat template does not parse: ${(e as Error).message}`, { cause: e });
    }
    if (compiled.size > 32) compiled.clear();
    compiled.set(source, t);
  }
  return t;
}

function checkMessages(messages: readonly ChatMessage[]): void {
  if (!Array.isArray(messages)) throw new HipAttnError('REQUEST', 'messages must be an array of {role, content}');
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null || typeof m.role !== 'string' || typeof m.content !== 'string') {
      throw new HipAttnError('REQUEST', `messages[${i}] must be an object with string "role" and "content"`);
    }
  });
}

/** Renders the conversation as the model's prompt text. TOKENIZER error when the model has no template. */
export function renderChat(tokenizer: TextTokenizer, messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
  checkMessages(messages);
  const source = tokenizer.chatTemplate;
  if (!source) {
    throw new HipAttnError(
      'TOKENIZER',
      'this model has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja, no tokenizer.chat_template in the GGUF); use a plain text prompt instead',
    );
  }
  try {
    return compile(source).render({
      ...tokenizer.specialTokens,
      ...options.variables,
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? true,
    });
  } catch (e) {
    if (e instanceof HipAttnError) throw e;
    throw new HipAttnError('TOKENIZER', `rendering the chat template failed: ${(e as Error).message}`, { cause: e });
  }
}

/** Renders and tokenizes a conversation (special tokens come from the template, none are added). */
export function encodeChat(tokenizer: TextTokenizer, messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): number[] {
  return tokenizer.encode(renderChat(tokenizer, messages, options), { addBos: false });
}
