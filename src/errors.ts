/**
 * Typed errors. Every error hipattn throws on bad input is a `HipAttnError` with a stable
 * `code`, so callers can branch on the kind of problem without parsing messages.
 */

export type HipAttnErrorCode =
  | 'SHAPE_MISMATCH'
  | 'INVALID_OPTION'
  | 'NON_FINITE'
  | 'MODEL_FORMAT'
  | 'UNSUPPORTED'
  | 'OUT_OF_MEMORY'
  | 'GPU'
  | 'TOKENIZER'
  | 'REQUEST'
  /** A model id, file or revision that does not exist (locally, on the Hub, or in the offline cache). */
  | 'NOT_FOUND'
  /** The Hugging Face Hub could not be reached, or a download was interrupted (a later call resumes it). */
  | 'NETWORK'
  /** Downloaded bytes do not match the size or checksum the Hub lists. */
  | 'INTEGRITY';

export class HipAttnError extends Error {
  readonly code: HipAttnErrorCode;
  constructor(code: HipAttnErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Tensor shapes or lengths do not agree with each other or with the declared shape. */
export class ShapeError extends HipAttnError {
  constructor(message: string) {
    super('SHAPE_MISMATCH', message);
  }
}

/** An option is out of range or inconsistent with another option. */
export class OptionError extends HipAttnError {
  constructor(message: string) {
    super('INVALID_OPTION', message);
  }
}

/** An input tensor holds NaN or ±Infinity. */
export class NonFiniteError extends HipAttnError {
  constructor(message: string) {
    super('NON_FINITE', message);
  }
}

/**
 * Offline (or with the Hub unreachable), the Hugging Face cache has no usable snapshot of
 * `repo` at `revision` in `cacheDir`.
 */
export class HubCacheMissError extends HipAttnError {
  readonly repo: string;
  readonly revision: string;
  readonly cacheDir: string;
  constructor(repo: string, revision: string, cacheDir: string, detail: string, options?: { cause?: unknown }) {
    super('NOT_FOUND', `${repo}@${revision} is not in the Hugging Face cache ${cacheDir} (${detail}); download it once without offline mode`, options);
    this.repo = repo;
    this.revision = revision;
    this.cacheDir = cacheDir;
  }
}
