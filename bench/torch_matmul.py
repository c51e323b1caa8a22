"""Peer baseline for the GEMM table (bench/gpu-matmul.ts): torch.matmul, y = x·Wᵀ with f16 x and
W (f32 accumulation, cuBLAS), on the Llama-3-8B projection shapes at M tokens, timed with CUDA
events (median of 20 after warm-up), weights rotated over copies so that the 50 MB L2 holds none.

Baseline only: the product never uses Python. Usage:
  python3 bench/torch_matmul.py [--m 2048] [--json out.json]
"""
import argparse
import json

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=2048)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    shapes = [(4096, 4096), (14336, 4096), (4096, 14336), (128256, 4096), (6144, 4096), (28672, 4096)]
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "M": a.m, "rows": []}
    print(f"torch.matmul peer on {out['device']} (torch {torch.__version__}), f16, M = {a.m}")
    g = torch.Generator(device="cuda").manual_seed(7)
    for n, k in shapes:
        x = torch.randn(a.m, k, device="cuda", dtype=torch.float16, generator=g)
        copies = max(1, min(4, (256 << 20) // (n * k * 2)))
        ws = [torch.randn(n, k, device="cuda", dtype=torch.float16, generator=g) * k ** -0.5 for _ in range(copies)]
        for w in ws:
            torch.matmul(x, w.t())
        torch.cuda.synchronize()
        times = []
        for i in range(20):
            s = torch.cuda.Event(enable_timing=True)
            e = torch.cuda.Event(enable_timing=True)
            s.record()
            torch.matmul(x, ws[i % copies].t())
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        times.sort()
        ms = times[len(times) // 2]
        tflops = 2 * a.m * n * k / (ms * 1e-3) / 1e12
        out["rows"].append({"N": n, "K": k, "ms": ms, "tflops": tflops})
        print(f"  {n}x{k} M={a.m}: torch.matmul {ms:.3f} ms, {tflops:.1f} TFLOP/s")
        del x, ws
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
