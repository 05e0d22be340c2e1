#!/usr/bin/env python3
"""hf_bench.py: the Hugging Face side of rella's GPU scoring benchmark and checks.

Runs on the GPU machine (torch, transformers, safetensors there; no network).

1. Makes a seeded, randomly initialised LLaMA checkpoint of the requested
   shape (default LLaMA-7B: d 4096, 32 layers, 32 heads, FFN 11008,
   vocab 32000; --layers N keeps the width with N layers, e.g. 8 of 32)
   directly on the GPU in bf16 and saves it as HF safetensors with a plain
   LLaMA config.json that rella's model package reads. With --model DIR it
   loads that checkpoint instead (e.g. the stories260K fixture, in
   --dtype float32) and links its files into --out, so --out is a complete
   checkpoint folder for `rella gpu-selftest --bench`.
2. Draws the benchmark's token sequences (seeded lengths in [--min-len,
   --max-len], BOS first) and writes them to seqs.json in --out, with the
   vocabulary rows scoring needs (▁Yes 3869, ▁No 1939; for a vocabulary
   too small for those, its last, first and middle rows).
3. Times HF scoring on them: attn_implementation="sdpa", logits_to_keep=1,
   batches of --batch sequences sorted by length, left padding with
   explicit position_ids; one warm-up, then --reps timed runs of the whole
   set with torch.cuda.synchronize() around each; median.
4. Writes hf_rows.json (each sequence's logits at those rows, from HF) so the
   Go engine can be compared with HF on the same checkpoint, and prints
   "BENCH hf_scoring ..." (the same fields as rella gpu-selftest's line,
   plus layers=).

Usage: python3 scripts/hf_bench.py --out DIR [--shape 7b|small|tiny] [--layers N]
       [--model DIR] [--dtype bf16|float32] [--samples 64] [--min-len 256]
       [--max-len 768] [--batch 8] [--reps 5] [--seed 1]
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000),
    "small": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=8, vocab_size=32000),
    "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=32000),
}
ROWS = [3869, 1939]  # ▁Yes, ▁No in the LLaMA tokenizer


def shape_of(shape, layers=None):
    """The config values of a named shape, with layers decoder layers if given."""
    kw = dict(SHAPES[shape])
    if layers:
        if layers < 1:
            raise ValueError(f"--layers {layers}: want at least 1")
        kw["num_hidden_layers"] = layers
    return kw


def make_checkpoint(out, shape, seed, layers=None):
    """Makes and saves the random checkpoint; returns the model (on the GPU)."""
    torch.manual_seed(seed)
    kw = shape_of(shape, layers)
    cfg = LlamaConfig(**kw, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                      tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                      attn_implementation="sdpa")
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="4GB")
    # A plain LLaMA config.json (newer transformers write rope settings in
    # forms rella's reader rejects); the tensors are what matters.
    plain = dict(kw, architectures=["LlamaForCausalLM"], model_type="llama", head_dim=kw["hidden_size"] // kw["num_attention_heads"],
                 max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
                 attention_bias=False, mlp_bias=False, tie_word_embeddings=False, torch_dtype="bfloat16",
                 hidden_act="silu", bos_token_id=1, eos_token_id=2)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(plain, f, indent=2)
    return model


def load_checkpoint(model_dir, out, dtype):
    """Loads an existing checkpoint on the GPU and links its files into out."""
    # The dtype is applied after loading: the name of from_pretrained's
    # argument for it changed across transformers releases.
    model = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").to(device="cuda", dtype=dtype)
    model.eval()
    os.makedirs(out, exist_ok=True)
    src = os.path.abspath(model_dir)
    if os.path.abspath(out) != src:
        for name in os.listdir(src):
            if name.endswith((".json", ".safetensors")) and name not in ("seqs.json", "hf_rows.json"):
                dst = os.path.join(out, name)
                if os.path.lexists(dst):
                    os.remove(dst)
                os.symlink(os.path.join(src, name), dst)
    return model


def score_rows(vocab):
    """▁Yes and ▁No for the LLaMA vocabulary; otherwise rows that exist."""
    if max(ROWS) < vocab:
        return ROWS
    return [vocab - 1, 0, vocab // 2]


def draw_seqs(n, lo, hi, vocab, seed):
    rng = random.Random(seed)
    seqs = []
    for _ in range(n):
        length = rng.randint(lo, hi)
        seqs.append([1] + [rng.randrange(3, vocab) for _ in range(length - 1)])
    return seqs


def batches(seqs, size):
    """Length-sorted batches of indices into seqs."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    return [order[i:i + size] for i in range(0, len(order), size)]


def forward_last(model, ids, mask, pos):
    """The model's logits at the last position only (logits_to_keep=1; older
    transformers call the argument num_logits_to_keep)."""
    try:
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, use_cache=False).logits
    except TypeError:
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, num_logits_to_keep=1, use_cache=False).logits


@torch.inference_mode()
def score(model, seqs, groups, rows):
    """Logits at rows of each sequence's last token; left padding, explicit positions."""
    out = [None] * len(seqs)
    rows_t = torch.tensor(rows, device="cuda")
    for g in groups:
        T = max(len(seqs[i]) for i in g)
        ids = torch.zeros((len(g), T), dtype=torch.long)
        mask = torch.zeros((len(g), T), dtype=torch.long)
        for r, i in enumerate(g):
            s = seqs[i]
            ids[r, T - len(s):] = torch.tensor(s)
            mask[r, T - len(s):] = 1
        ids, mask = ids.cuda(non_blocking=True), mask.cuda(non_blocking=True)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = forward_last(model, ids, mask, pos)
        sel = logits[:, -1, :].index_select(-1, rows_t).float()
        for r, i in enumerate(g):
            out[i] = sel[r]
    return [o.tolist() for o in out]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", default="7b", choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, help="decoder layers (default: the shape's)")
    ap.add_argument("--model", help="score this checkpoint instead of making one")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "float32"], help="with --model: the precision to load it in")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--min-len", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=768)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if not 1 <= a.min_len <= a.max_len:
        ap.error(f"want 1 <= --min-len ({a.min_len}) <= --max-len ({a.max_len})")

    t0 = time.perf_counter()
    if a.model:
        model = load_checkpoint(a.model, a.out, torch.float32 if a.dtype == "float32" else torch.bfloat16)
        what = f"loaded {a.model} ({a.dtype}) into {a.out}"
    else:
        model = make_checkpoint(a.out, a.shape, a.seed, a.layers)
        what = f"made {a.shape} checkpoint in {a.out}"
    cfg = model.config
    if a.max_len > cfg.max_position_embeddings:
        ap.error(f"--max-len {a.max_len} beyond the model's {cfg.max_position_embeddings} positions")
    print(f"INFO hf: {what} in {time.perf_counter() - t0:.1f}s: {cfg.num_hidden_layers} layers, d {cfg.hidden_size}, "
          f"vocab {cfg.vocab_size} (torch {torch.__version__}, CUDA {torch.version.cuda}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name()}, attention {model.config._attn_implementation})", flush=True)
    vocab = cfg.vocab_size
    rows_wanted = score_rows(vocab)
    seqs = draw_seqs(a.samples, a.min_len, a.max_len, vocab, a.seed)
    with open(os.path.join(a.out, "seqs.json"), "w") as f:
        json.dump({"seqs": seqs, "rows": rows_wanted}, f)

    groups = batches(seqs, a.batch)
    rows = score(model, seqs, groups, rows_wanted)  # warm-up, and the values for the comparison
    with open(os.path.join(a.out, "hf_rows.json"), "w") as f:
        json.dump({"rows": rows_wanted, "logits": rows}, f)
    times = []
    for _ in range(a.reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        score(model, seqs, groups, rows_wanted)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    tokens = sum(len(s) for s in seqs)
    print(f"BENCH hf_scoring samples={len(seqs)} tokens={tokens} reps={a.reps} median_s={med:.4f} "
          f"samples_per_s={len(seqs) / med:.2f} tokens_per_s={tokens / med:.0f} batch={a.batch} "
          f"layers={cfg.num_hidden_layers} d={cfg.hidden_size}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
