/**
 * Files that ship with the package (Node only): the package root, and the embedded default
 * model, found from dist/ or src/ alike by walking up to hipattn's package.json.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package's root directory (the folder of hipattn's package.json). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, 'utf8')) as { name?: string }).name === 'hipattn') return dir;
      } catch {
        // not ours; keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('hipattn: cannot find the package root (package.json)');
    dir = up;
  }
}

/** The package's version (package.json `version`). */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/** The embedded default model: hip-testbed-mini (13 MB, with its model card), an absolute path. */
export function embeddedModelPath(): string {
  return join(packageRoot(), 'models', 'hip-testbed-mini');
}
