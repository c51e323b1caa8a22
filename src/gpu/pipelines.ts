/**
 * Compute-pipeline cache and WGSL compilation with readable errors.
 *
 * Kernels are WGSL generated from templates, so the cache key is the generated code itself
 * (plus the shader name, entry point, override constants and layout): two variants of one
 * kernel are two entries, the same variant asked for twice compiles once.
 */

import { HipAttnError } from '../errors.js';

/** How a binding is used, for explicit bind group layouts. */
export type BindingKind = 'storage' | 'read-only-storage' | 'uniform';

export interface ComputePipelineSpec {
  /** Shader name, for error messages and labels (e.g. 'hip-mask/refine'). */
  name: string;
  /** The (generated) WGSL source. */
  code: string;
  /** Entry point; default 'main'. */
  entryPoint?: string;
  /** Pipeline-overridable constants (`override` declarations). */
  constants?: Record<string, number>;
  /**
   * Explicit layout: `bindings[g][b]` is the kind of `@group(g) @binding(b)`. Bindings must be
   * numbered 0..n-1 in each group. When omitted the layout is 'auto' — convenient, but 'auto'
   * drops bindings the entry point never reads, so a bind group with all buffers then fails.
   * Templated kernels whose variants may skip a binding should pass an explicit layout.
   */
  bindings?: BindingKind[][];
}

/** A compiled pipeline and the bind group layouts to bind it with. */
export interface CompiledPipeline {
  readonly pipeline: GPUComputePipeline;
  readonly name: string;
  readonly entryPoint: string;
  /** Layouts by group index (from the explicit layout, or `getBindGroupLayout` for 'auto'). */
  bindGroupLayout(group?: number): GPUBindGroupLayout;
}

/** Per-device pipeline cache. Create one per device (a `GpuContext` has one: `ctx.pipelines`). */
export class PipelineCache {
  readonly device: GPUDevice;
  private readonly modules = new Map<string, Promise<GPUShaderModule>>();
  private readonly pipelines = new Map<string, Promise<CompiledPipeline>>();
  private compiles = 0;

  constructor(device: GPUDevice) {
    this.device = device;
  }

  /** Number of cached pipelines. */
  get size(): number {
    return this.pipelines.size;
  }

  /** Number of shader modules compiled so far (cache misses), for tests and profiling. */
  get compileCount(): number {
    return this.compiles;
  }

  /** Drops every cached pipeline and module. */
  clear(): void {
    this.modules.clear();
    this.pipelines.clear();
  }

  /**
   * Compiles WGSL once per (name, code) and checks `getCompilationInfo()`.
   * @throws HipAttnError('GPU') naming the shader, line and column, quoting the source line.
   */
  shaderModule(name: string, code: string): Promise<GPUShaderModule> {
    const key = `${name}\u0000${code}`;
    let p = this.modules.get(key);
    if (!p) {
      this.compiles++;
      p = compileShader(this.device, name, code);
      this.modules.set(key, p);
      p.catch(() => this.modules.delete(key));
    }
    return p;
  }

  /**
   * The compute pipeline for a spec, compiled on first use and cached. Concurrent requests
   * for the same spec share one compilation; a failed compilation is not cached.
   */
  computePipeline(spec: ComputePipelineSpec): Promise<CompiledPipeline> {
    const entryPoint = spec.entryPoint ?? 'main';
    const key = [
      spec.name,
      entryPoint,
      spec.constants ? JSON.stringify(Object.entries(spec.constants).sort()) : '',
      spec.bindings ? JSON.stringify(spec.bindings) : 'auto',
      spec.code,
    ].join('\u0000');
    let p = this.pipelines.get(key);
    if (!p) {
      p = this.build(spec, entryPoint);
      this.pipelines.set(key, p);
      p.catch(() => this.pipelines.delete(key));
    }
    return p;
  }

  private async build(spec: ComputePipelineSpec, entryPoint: string): Promise<CompiledPipeline> {
    const device = this.device;
    const module = await this.shaderModule(spec.name, spec.code);
    let layouts: GPUBindGroupLayout[] | null = null;
    let layout: GPUPipelineLayout | 'auto' = 'auto';
    if (spec.bindings) {
      layouts = spec.bindings.map((group, g) =>
        device.createBindGroupLayout({
          label: `${spec.name} group ${g}`,
          entries: group.map((kind, b) => ({
            binding: b,
            visibility: 0x4 /* GPUShaderStage.COMPUTE */,
            buffer: { type: kind },
          })),
        }),
      );
      layout = device.createPipelineLayout({ label: spec.name, bindGroupLayouts: layouts });
    }
    const descriptor: GPUComputePipelineDescriptor = {
      label: `${spec.name}:${entryPoint}`,
      layout,
      compute: { module, entryPoint, ...(spec.constants ? { constants: spec.constants } : {}) },
    };
    let pipeline: GPUComputePipeline;
    device.pushErrorScope('validation');
    try {
      pipeline = await device.createComputePipelineAsync(descriptor);
    } catch (cause) {
      await device.popErrorScope();
      throw new HipAttnError(
        'GPU',
        `shader "${spec.name}": creating the compute pipeline for entry point "${entryPoint}" failed: ${
          cause instanceof Error ? cause.message : String(cause)
        }`,
        { cause },
      );
    }
    const err = await device.popErrorScope();
    if (err) {
      throw new HipAttnError(
        'GPU',
        `shader "${spec.name}": creating the compute pipeline for entry point "${entryPoint}" failed: ${err.message}`,
      );
    }
    const fixed = layouts;
    return {
      pipeline,
      name: spec.name,
      entryPoint,
      bindGroupLayout(group = 0) {
        if (fixed) {
          const l = fixed[group];
          if (!l) throw new HipAttnError('GPU', `shader "${spec.name}" has no bind group ${group}`);
          return l;
        }
        return pipeline.getBindGroupLayout(group);
      },
    };
  }
}

/**
 * Compiles one WGSL module and throws a readable error when it has errors.
 * Warnings are ignored (Dawn reports e.g. uniformity warnings).
 */
export async function compileShader(device: GPUDevice, name: string, code: string): Promise<GPUShaderModule> {
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ label: name, code });
  const info = await module.getCompilationInfo();
  const scopeError = await device.popErrorScope();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length > 0) {
    throw new HipAttnError('GPU', formatCompilationErrors(name, code, errors));
  }
  if (scopeError) {
    throw new HipAttnError('GPU', `shader "${name}": WGSL compilation failed: ${scopeError.message}`);
  }
  return module;
}

/** The subset of GPUCompilationMessage this module reads (so tests can fake messages). */
export interface CompilationMessageLike {
  readonly message: string;
  readonly type: string;
  readonly lineNum: number;
  readonly linePos: number;
  readonly offset?: number;
  readonly length?: number;
}

/**
 * Formats WGSL compilation errors as
 * `WGSL error in shader "NAME" at line L, column C: MESSAGE` followed by the source line and a
 * caret under the column, for each error (at most 5).
 */
export function formatCompilationErrors(name: string, code: string, messages: readonly CompilationMessageLike[]): string {
  const lines = code.split('\n');
  const shown = messages.slice(0, 5).map((m) => {
    const head =
      m.lineNum > 0
        ? `WGSL error in shader "${name}" at line ${m.lineNum}, column ${m.linePos}: ${m.message}`
        : `WGSL error in shader "${name}": ${m.message}`;
    const src = m.lineNum > 0 ? lines[m.lineNum - 1] : undefined;
    if (src === undefined) return head;
    const gutter = `${m.lineNum} | `;
    const width = Math.max(1, Math.min(m.length ?? 1, src.length - (m.linePos - 1)));
    const caret = ' '.repeat(gutter.length - 2) + '| ' + ' '.repeat(Math.max(0, m.linePos - 1)) + '^'.repeat(width);
    return `${head}\n    ${gutter}${src.replace(/\t/g, ' ')}\n    ${caret}`;
  });
  if (messages.length > 5) shown.push(`… and ${messages.length - 5} more error(s)`);
  return shown.join('\n');
}

/** Creates a bind group binding whole buffers (or buffer ranges) to bindings 0..n-1 of a group. */
export function bindBuffers(
  device: GPUDevice,
  compiled: CompiledPipeline,
  buffers: readonly (GPUBuffer | GPUBufferBinding)[],
  group = 0,
): GPUBindGroup {
  return device.createBindGroup({
    label: `${compiled.name} group ${group}`,
    layout: compiled.bindGroupLayout(group),
    entries: buffers.map((b, i) => ({ binding: i, resource: 'buffer' in b ? b : { buffer: b } })),
  });
}
