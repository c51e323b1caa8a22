/**
 * Attention kernels on the f32 path (a device with shader-f16 and subgroups disabled, as on
 * SwiftShader) — see test/kernels/attention-suite.ts.
 */
import { defineAttentionSuite } from '../../../test/kernels/attention-suite.js';

await defineAttentionSuite('f32');
