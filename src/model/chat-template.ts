/**
 * Chat templates: the model's Jinja template (tokenizer_config.json `chat_template`, a
 * chat_template.jinja file, or GGUF `tokenizer.chat_template`) rendered with @huggingface/jinja,
 * the way transformers' apply_chat_template does; models without one get ChatML
 * (DEFAULT_CHAT_TEMPLATE).
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

/**
 * The template of models that have none (no chat_template in tokenizer_config.json, no
 * chat_template.jinja, no tokenizer.chat_template in the GGUF): ChatML, the fallback
 * llama.cpp's server uses too. Each message is `<|im_start|>{role}\n{content}<|im_end|>\n`;
 * the generation prompt is `<|im_start|>assistant\n`. encodeChat puts BOS in front (the
 * template itself has none), as the tokenizer does for text.
 */
export const DEFAULT_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Where the default template ends a turn: generation of a chat prompt stops there too. */
export const DEFAULT_CHAT_STOP = '<|im_end|>';

/** True when chat prompts of this tokenizer's model use DEFAULT_CHAT_TEMPLATE. */
export function usesDefaultChatTemplate(tokenizer: TextTokenizer): boolean {
  return !tokenizer.chatTemplate;
}

/** Renders the conversation as the model's prompt text (its template, else DEFAULT_CHAT_TEMPLATE). */
export function renderChat(tokenizer: TextTokenizer, messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
  checkMessages(messages);
  const source = tokenizer.chatTemplate || DEFAULT_CHAT_TEMPLATE;
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

/**
 * Renders and tokenizes a conversation. With the model's own template the special tokens come
 * from the template and none are added; with the default one BOS is added, as for text.
 */
export function encodeChat(tokenizer: TextTokenizer, messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): number[] {
  const { prefix, text } = chatText(tokenizer, messages, options);
  return [...prefix, ...tokenizer.encode(text, { addBos: false })];
}

/**
 * encodeChat in two steps: the rendered text (to be encoded with `addBos: false`) and the ids in
 * front of it (BOS with the default template, none with the model's own).
 */
export function chatText(tokenizer: TextTokenizer, messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): { prefix: number[]; text: string } {
  const text = renderChat(tokenizer, messages, options);
  const prefix = usesDefaultChatTemplate(tokenizer) && tokenizer.bosTokenId !== undefined ? [tokenizer.bosTokenId] : [];
  return { prefix, text };
}
