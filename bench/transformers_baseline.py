"""Peer baseline for `hipattn bench model --peer transformers`: the same model shapes in PyTorch +
Hugging Face transformers on the same GPU — LlamaForCausalLM built from a config with random bf16
weights, SDPA attention, one prefill of the whole context (logits_to_keep=1), then greedy decoding
with the KV cache — timed like hipattn's rows (wall clock around each phase, synchronised).

Baseline only: the product never uses Python. Usage:
  python3 bench/transformers_baseline.py --model llama3-8b|CONFIG_DIR --contexts 8192,32768 \
      [--decode-tokens 32] [--json out.json]
"""
import argparse
import json
import time

import torch
import transformers
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

# Llama-3-8B's shapes (as hipattn's LLAMA3_8B in src/model/synthetic.ts).
LLAMA3_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=128256,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama3-8b")
    ap.add_argument("--contexts", default="8192,32768")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    contexts = [int(c) for c in a.contexts.split(",")]
    longest = max(contexts) + a.decode_tokens
    if a.model == "llama3-8b":
        cfg = LlamaConfig(**LLAMA3_8B, max_position_embeddings=longest)
    else:
        cfg = AutoConfig.from_pretrained(a.model)
        cfg.max_position_embeddings = max(cfg.max_position_embeddings, longest)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(a.seed)
    torch.set_default_dtype(torch.bfloat16)
    t0 = time.perf_counter()
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model.eval()
    torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    vocab = cfg.vocab_size
    g = torch.Generator(device="cuda").manual_seed(a.seed)
    info = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": "bfloat16",
        "attention": "sdpa",
        "model": a.model,
        "build_s": build_s,
        "rows": [],
    }
    print(f"transformers {transformers.__version__} / torch {torch.__version__} on {info['device']}: {a.model}, bf16, SDPA (built in {build_s:.1f} s)")

    @torch.no_grad()
    def run(n_prompt, n_decode):
        ids = torch.randint(0, vocab, (1, n_prompt), device="cuda", generator=g)
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        prefill = time.perf_counter() - t
        past = out.past_key_values
        t = time.perf_counter()
        for _ in range(n_decode):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        nxt.item()  # greedy decoding reads each token back, as hipattn's loop does
        torch.cuda.synchronize()
        return prefill, time.perf_counter() - t

    run(256, 4)  # warm-up
    for ctx in contexts:
        prefill, decode = run(ctx, a.decode_tokens)
        row = {
            "context": ctx,
            "prefillSeconds": prefill,
            "prefillTokensPerSecond": ctx / prefill,
            "decodeTokensPerSecond": a.decode_tokens / decode,
            "memoryBytes": torch.cuda.max_memory_allocated(),
        }
        info["rows"].append(row)
        print(f"  @ {ctx}: prefill {row['prefillTokensPerSecond']:.0f} tok/s, decode {row['decodeTokensPerSecond']:.1f} tok/s")
        torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
