/**
 * The README's quick start, run as a user would: `npm pack` this checkout, install the tarball
 * into an empty project, run the README's library example (quickstart.mjs, copied out of
 * README.md) and `npx hipattn generate` there, and compare their output with the same calls
 * made in this repository. A consumer's `tsc` must accept the published types.
 *
 * Installing: the tarball is unpacked into the project's node_modules as npm would, and each
 * package it declares in `dependencies` is linked from this checkout's node_modules (so a
 * dependency missing from package.json fails here). That needs no network and no npm cache,
 * here and in CI; `npm install` itself is not what is under test.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/runtime/load.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..');

/** The README's quick start: the ```js block that starts with `// quickstart.mjs`. */
function quickstartFromReadme(readme: string): string {
  const m = /```js\n(\/\/ quickstart\.mjs\n[\s\S]*?)```/.exec(readme);
  if (!m) throw new Error('README.md has no ```js block starting with "// quickstart.mjs"');
  return m[1]!;
}

let project = '';
let tarball = '';

beforeAll(async () => {
  const work = await mkdtemp(join(tmpdir(), 'hipattn-package-'));
  // npm pack packs what `files` lists (dist must be built: npm test builds first)
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: ROOT, maxBuffer: 1 << 26 });
  tarball = join(work, (JSON.parse(stdout) as { filename: string }[])[0]!.filename);
  project = join(work, 'consumer');
  const modules = join(project, 'node_modules');
  await mkdir(modules, { recursive: true });
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module', dependencies: { hipattn: `file:${tarball}` } }, null, 2));
  await run('tar', ['-xzf', tarball, '-C', modules]);
  await rename(join(modules, 'package'), join(modules, 'hipattn'));
  const pkg = JSON.parse(await readFile(join(modules, 'hipattn', 'package.json'), 'utf8')) as { dependencies: Record<string, string>; bin: Record<string, string> };
  // the consumer's own dev dependencies for `tsc`, and everything hipattn declares
  for (const dep of [...Object.keys(pkg.dependencies), '@types/node']) {
    await mkdir(dirname(join(modules, dep)), { recursive: true });
    await symlink(join(ROOT, 'node_modules', dep), join(modules, dep), 'dir');
  }
  // bins, as npm links them
  await mkdir(join(modules, '.bin'), { recursive: true });
  for (const [name, file] of Object.entries(pkg.bin)) {
    await chmod(join(modules, 'hipattn', file), 0o755);
    await symlink(join('..', 'hipattn', file), join(modules, '.bin', name));
  }
}, 120_000);

afterAll(async () => {
  if (project) await rm(dirname(project), { recursive: true, force: true });
});

describe('the packed package in an empty project', () => {
  it("ships what the README's quick start needs: the embedded model, the CLI, no test files", async () => {
    const { stdout } = await run('tar', ['-tzf', tarball], { maxBuffer: 1 << 24 });
    const files = stdout.split('\n');
    for (const f of ['package/models/hip-testbed-mini/config.json', 'package/models/hip-testbed-mini/model.safetensors', 'package/dist/src/index.js', 'package/dist/src/index.d.ts', 'package/dist/src/cli/main.js', 'package/dist/src/cli/adapter-probe-main.js']) {
      expect(files).toContain(f);
    }
    expect(files.filter((f) => /\.test\.(js|ts)$/.test(f))).toEqual([]);
  });

  it("runs the README's library example (embedded model, CPU, chat) with the output the same calls give in this repository", async () => {
    const code = quickstartFromReadme(await readFile(join(ROOT, 'README.md'), 'utf8'));
    await writeFile(join(project, 'quickstart.mjs'), code);
    const { stdout, stderr } = await run(process.execPath, ['quickstart.mjs'], { cwd: project, maxBuffer: 1 << 24 });
    expect(stderr).toMatch(/^prefill \d+ tok\/s, decode \d+ tok\/s$/m);

    // the same calls in-repo
    const model = await loadModel(undefined, { device: 'cpu' });
    try {
      const text = (await model.generate('The pass key is 31415. Remember it. 31415 is the pass key.\nWhat is the pass key? The pass key is', { maxNewTokens: 8, temperature: 0 })).text;
      const reply = (await model.generate({ messages: [{ role: 'user', content: 'What is the pass key?' }] }, { maxNewTokens: 16, temperature: 0 })).text;
      expect(text).toContain('31415');
      expect(stdout).toBe(`${text}\n${reply}\n`);
    } finally {
      await model.dispose();
    }
  }, 120_000);

  it('npx hipattn generate runs there and prints the greedy text of the same call in this repository', async () => {
    const prompt = 'The pass key is 27182. Remember it. 27182 is the pass key.\nWhat is the pass key? The pass key is';
    const { stdout, stderr } = await run('npx', ['--no', '--', 'hipattn', 'generate', '--device', 'cpu', '--prompt', prompt, '--max-new-tokens', '6', '--temperature', '0'], { cwd: project, maxBuffer: 1 << 24 });
    expect(stderr).toMatch(/prefill [\d.]+ tok\/s/);
    const model = await loadModel(undefined, { device: 'cpu' });
    try {
      const ref = await model.generate(prompt, { maxNewTokens: 6, temperature: 0 });
      expect(stdout).toBe(`${ref.text}\n`);
    } finally {
      await model.dispose();
    }
    const version = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect((await run('npx', ['--no', '--', 'hipattn', '--version'], { cwd: project })).stdout.trim()).toBe(version.version);
  }, 120_000);

  it("a consumer's tsc accepts the published types (root type exports, WebGPU types through @webgpu/types)", async () => {
    await writeFile(
      join(project, 'consumer.ts'),
      `import { loadModel, embeddedModelPath, gpu, type ChatMessage, type GeneratedToken, type GenerateOptions, type GenerationStats, type GenerationStream } from 'hipattn';

const messages: ChatMessage[] = [{ role: 'user', content: 'Hi' }];
const options: Partial<GenerateOptions> = { maxNewTokens: 4, temperature: 0 };
export async function main(): Promise<GenerationStats | undefined> {
  const path: string = await embeddedModelPath();
  const model = await loadModel(path, { device: 'cpu' });
  const stream: GenerationStream = model.stream({ messages }, options);
  for await (const t of stream) {
    const token: GeneratedToken = t;
    console.log(token.id, token.text);
  }
  await model.dispose();
  return stream.stats;
}
export const deviceOf = (ctx: gpu.GpuContext): GPUDevice => ctx.device;
`,
    );
    await writeFile(
      join(project, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true, types: ['node'] }, files: ['consumer.ts'] }),
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: project }).catch((e: { stdout: string; code: number }) => e);
    expect((r as { stdout: string }).stdout).toBe('');
  }, 120_000);
});
