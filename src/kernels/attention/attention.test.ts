/** Attention kernels with f16 storage (Node; CI: lavapipe) — see test/kernels/attention-suite.ts. */
import { defineAttentionSuite } from '../../../test/kernels/attention-suite.js';

await defineAttentionSuite('f16');
