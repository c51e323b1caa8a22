/**
 * Hugging Face Hub model ids (`org/name`, `org/name@revision`, `org/name[@revision]/file.gguf`)
 * and the options for downloading them. No Node imports: the downloader itself is hub.ts,
 * loaded lazily.
 */
import { HipAttnError } from '../errors.js';

/** Options for models given as Hub ids (`loadModel(id, { hub })`). Node only. */
export interface HubOptions {
  /**
   * The Hugging Face cache (the layout Python's huggingface_hub uses). Default: @huggingface/hub's
   * `getHFHubCachePath()`: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
   */
  cacheDir?: string;
  /** Branch, tag or commit hash (default "main"; an `@revision` in the id means the same). */
  revision?: string;
  /**
   * Never touch the network: resolve `refs/<revision>` to a snapshot in the cache, or throw
   * `HubCacheMissError`. (Without it, a cached snapshot is also used, with a warning, when the
   * Hub cannot be reached.)
   */
  offline?: boolean;
  /** The Hub's address (default https://huggingface.co), e.g. a mirror. */
  hubUrl?: string;
  /** A Hugging Face token (`hf_…`) for private or gated repos. Default: $HF_TOKEN. */
  accessToken?: string;
  /** A fetch to use instead of the global one (proxies, extra headers, tests). */
  fetch?: typeof fetch;
  /** How many times an interrupted download is resumed within one call before giving up (default 3). */
  retries?: number;
  /** Where warnings go (default console.warn), e.g. "Hub unreachable, using the cached snapshot". */
  onWarning?: (message: string) => void;
}

export interface HubModelId {
  /** `org/name`. */
  repo: string;
  /** From `@revision`, if given. */
  revision?: string;
  /** A file inside the repo (a `.gguf`), if given. */
  file?: string;
}

const SEGMENT = '[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?';
const HUB_ID = new RegExp(`^(${SEGMENT}/${SEGMENT})(?:@([^/@\\s]+))?(?:/([^@\\s]+\\.gguf))?$`, 'i');

/** True when every `/`-separated part of `p` is a plain name (no empty, `.` or `..` parts, no leading `/` or `\`). */
export function isSafeRelativePath(p: string): boolean {
  if (p === '' || p.includes('\\') || p.includes('\0')) return false;
  return p.split('/').every((s) => s !== '' && s !== '.' && s !== '..');
}

/**
 * Parses `org/name`, `org/name@revision`, `org/name/file.gguf` or `org/name@revision/file.gguf`
 * (a revision with slashes, e.g. `refs/pr/1`, is written URL-encoded: `@refs%2Fpr%2F1`, or given
 * as an option). Returns undefined for anything else.
 */
export function parseHubId(id: string): HubModelId | undefined {
  const m = HUB_ID.exec(id);
  if (!m) return undefined;
  const repo = m[1]!;
  if (repo.includes('--') || repo.includes('..')) return undefined;
  const out: HubModelId = { repo };
  if (m[2] !== undefined) {
    let rev: string;
    try {
      rev = decodeURIComponent(m[2]);
    } catch {
      return undefined;
    }
    if (!isSafeRelativePath(rev)) return undefined;
    out.revision = rev;
  }
  if (m[3] !== undefined) {
    if (!isSafeRelativePath(m[3])) return undefined;
    out.file = m[3];
  }
  return out;
}

/** Extensions of model and tokenizer files: a string whose last part ends in one names a file, not a repo. */
const FILE_EXTENSION = /\.(gguf|safetensors|json|jinja|bin|pt|pth|onnx|model|txt)$/i;

/**
 * True when a model string can only be a local path, so that a missing one is reported as such
 * instead of being looked up on the Hub. The rule (README "Model sources"): a string that
 * starts with `.`, `/` or `~`, holds a backslash or a drive letter, has three or more
 * `/`-separated parts without being `org/name[@rev]/file.gguf`, or ends in a file extension
 * without being that form (`models/x.gguf`, `dir/config.json`) is a path. What is left is a
 * Hub id or an ambiguous `org/name` (e.g. `models/hip-testbed-mini`): that goes to the Hub
 * once no local path of that name exists, and its error says the local path was missing too.
 */
export function isLocalPathLike(source: string): boolean {
  if (/^[.~/\\]/.test(source) || source.includes('\\') || /^[A-Za-z]:/.test(source)) return true;
  const id = parseHubId(source);
  if (!id) return true;
  return id.file === undefined && FILE_EXTENSION.test(id.repo);
}

/** The revision to use: the id's `@revision`, else the option, else "main"; both given and different is an error. */
export function hubRevision(id: HubModelId, option: string | undefined): string {
  if (id.revision !== undefined && option !== undefined && option !== id.revision) {
    throw new HipAttnError('INVALID_OPTION', `${id.repo}: the id says revision "${id.revision}" but the revision option says "${option}"`);
  }
  const rev = id.revision ?? option ?? 'main';
  if (!isSafeRelativePath(rev)) throw new HipAttnError('INVALID_OPTION', `invalid revision "${rev}"`);
  return rev;
}
