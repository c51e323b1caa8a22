"""Peer baseline for `hipattn bench attention`: PyTorch scaled_dot_product_attention, dense, on
the same shapes, causal prefill and single-query decode — with PyTorch's default backend choice
(on Hopper usually cuDNN attention) and with the FlashAttention backend forced.

Baseline only: the product never uses Python. Usage:
  python3 bench/sdpa_baseline.py --seq-lens 4096,8192 --heads 32 --kv-heads 8 --head-dim 128 --json out.json
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_ms(fn, warmup=3, iters=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-lens", default="4096,8192,16384,32768,65536,131072")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--modes", default="prefill,decode")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    dev = torch.device("cuda")
    rows = []
    backends = {
        "sdpa-default": None,
        "sdpa-flash": [SDPBackend.FLASH_ATTENTION],
    }
    for T in [int(x) for x in a.seq_lens.split(",")]:
        for mode in a.modes.split(","):
            tq = T if mode == "prefill" else 1
            q = torch.randn(1, a.heads, tq, a.head_dim, device=dev, dtype=dtype)
            k = torch.randn(1, a.kv_heads, T, a.head_dim, device=dev, dtype=dtype)
            v = torch.randn(1, a.kv_heads, T, a.head_dim, device=dev, dtype=dtype)
            causal = mode == "prefill"
            flops = 4 * a.heads * a.head_dim * (T * (T + 1) / 2 if causal else T)
            for name, backend in backends.items():
                fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
                try:
                    if backend is None:
                        ms = time_ms(fn, iters=5 if T >= 65536 and causal else 20)
                    else:
                        with sdpa_kernel(backend):
                            ms = time_ms(fn, iters=5 if T >= 65536 and causal else 20)
                    row = {"method": name, "mode": mode, "T": T, "ms": ms, "tflops": flops / ms / 1e9}
                except Exception as e:  # out of memory, backend refused the shape, ...
                    row = {"method": name, "mode": mode, "T": T, "error": str(e).splitlines()[0][:200]}
                rows.append(row)
                print(json.dumps(row), flush=True)
            del q, k, v
            torch.cuda.empty_cache()
    info = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0),
        "cuda": torch.version.cuda,
        "dtype": a.dtype,
        "heads": a.heads,
        "kvHeads": a.kv_heads,
        "headDim": a.head_dim,
        "rows": rows,
    }
    if a.json:
        with open(a.json, "w") as f:
            json.dump(info, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
