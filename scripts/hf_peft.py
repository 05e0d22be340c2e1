#!/usr/bin/env python3
"""hf_peft.py: the Hugging Face PEFT side of rella's LoRA training checks.

Runs on the GPU machine (python3 with torch, transformers, peft, safetensors;
no network). torch and friends are imported lazily, so `--dry-run` (and
`make-data`) work on a machine without them: they check the arguments and
the input files (JSON formats, adapter config, safetensors headers) and say
what would run.

Subcommands (each writes into --out and prints a short summary; lines that
start with CHECK or BENCH are meant for scripts/gpu-check.sh's table):

  make-model   --out DIR [--shape tiny|small|7b] [--layers N] [--seed 1]
      A seeded random LLaMA checkpoint made by scripts/hf_bench.py's
      make_checkpoint (the same one the scoring benchmark uses).

  make-data    --out FILE [--examples 16] [--min-len 24] [--max-len 48]
               [--label-last 4] [--vocab 32000] [--seed 1]
               [--steps 50 --micro-batch 4 --accum 2]
      Seeded random training examples in rella's convention (below), and
      optionally a fixed data order for `curve` (epochs reshuffled with
      Python's random.Random(seed + epoch)).

  vicuna       < prompts.jsonl > wrapped.jsonl
      Wraps `rella prompts` output in prompt.Vicuna's template (checked
      against prompt/prompt.go) as JSON strings for `rella tokenize --bos`.

  load-adapter --model DIR --adapter DIR --out DIR [--seqs FILE]
               [--rella-pred predictions.jsonl] [--tol 1e-3] [--dtype float32|bf16]
      Loads a rella-written PEFT adapter (lora/peft.go: adapter_config.json
      + adapter_model.safetensors, F32 tensors named
      base_model.model.<module>.lora_A|B.weight) with
      peft.PeftModel.from_pretrained onto the HF LLaMA in --model and checks:
        * every tensor of the file is in the model, bit for bit, and every
          LoRA tensor of the model is in the file (PEFT ignores missing keys
          with at most a warning, so this is checked explicitly, both by
          live parameter names and by peft's get_peft_model_state_dict);
        * the last-position logits of PEFT's forward equal those of the base
          model with W + (lora_alpha/r) * B @ A merged by hand (independent of
          PEFT's forward: this is what rella means by the adapter);
        * with --rella-pred, P(Yes) = softmax([No, Yes])[1] of each sequence
          equals rella's predictions.jsonl "p" (same index) within --tol.
      Writes adapter_logits.safetensors (logits [n, V] with the adapter,
      base_logits, merged_logits) and adapter_check.json.

  step         --model DIR --batch FILE --out DIR [--lora-init FILE]
               [--r 8 --alpha 16 --targets q_proj,v_proj] [--dtype float32|bf16]
      One training micro-batch through PEFT LoRA (dropout 0): loss = sum of
      cross-entropy over the labelled tokens (also the mean), backward, and
      every LoRA gradient saved as out/grads.safetensors (F32, the PEFT file
      names rella uses) + out/loss.json. LoRA A and B start from --lora-init
      (a safetensors file with those names, e.g. a rella adapter's
      adapter_model.safetensors); without it they are drawn N(0, 0.01^2)
      from --seed (B non-zero, so every path has a gradient) and written to
      out/lora_init.safetensors for the other side to start from.

  compare      --a FILE --b FILE [--tol 0.1] [--min-cos 0.99]
      Two gradient files (same names): per-tensor and global relative error
      ||a-b||/||b|| and cosine; fails beyond the bounds.

  bench        --model DIR [--micro-batch 8] [--steps 10] [--warmup 2]
               [--seq-lens 512] [--label-last 32]
      HF PEFT training throughput: bf16, attn_implementation="sdpa", no
      gradient checkpointing, LoRA r 8 / alpha 16 / dropout 0.05 on q_proj,
      v_proj, AdamW lr 1e-3. Random tokens, the last --label-last positions
      of each sequence labelled (as cuda's TestTrainBench). Times forward +
      backward (the part Go's BENCH go_train_lossgrad times) and the
      optimiser step separately with CUDA events; median over the timed
      steps. Peak memory from torch.cuda.max_memory_allocated. MFU against
      790 TFLOP/s with GPU.md's 4 N' + 4 V d + 3 A FLOPs per token
      (N' = parameters minus embedding, LM head and final norm, as Go
      counts; A = 4 s d L).

  curve        --model DIR --data FILE --out DIR [--steps 50] [--lora-init FILE]
               [--lr 1e-3 --scheduler linear|cosine|constant --warmup 0 --total-steps N]
               [--weight-decay 0 --beta1 0.9 --beta2 0.999 --eps 1e-8 --max-grad-norm 1.0]
      A loss curve with a fixed data order, following package trainer's
      loop exactly: per step, the summed loss and gradients of its
      micro-batches are divided by the window's labelled tokens, the global
      norm is clipped (max/(norm+1e-6)), the learning rate is trainer.LR
      (linear decay to 0 at total steps, after linear warm-up), and
      torch.optim.AdamW (the same update as trainer.AdamW). Writes
      out/log.jsonl with rella's keys {"step","loss","lr","grad_norm"};
      with --compare-log (a rella log.jsonl) reports the largest loss gap.

Label convention. rella's engine.Example has Labels[t] = the token to
predict after reading Tokens[:t+1] (already shifted), or -100. So Labels[t]
is the target of the logits at position t, and this script computes the loss
that way: cross_entropy(logits[t], Labels[t]), ignore_index -100, summed
over t. HF's LlamaForCausalLM(labels=L) shifts internally (logits[t] against
L[t+1]); the equivalent HF labels are L = [-100] + Labels[:-1], which cannot
express a label at the last position (rella's trainingExample never puts one
there). `step` checks the equivalence: in float32 it also runs HF's own loss
with the converted labels and records both sums in loss.json.

Batch/data files (JSON): {"examples": [{"tokens": [...], "labels": [...]}, ...]}
(a bare list of examples also works). For `curve`, "steps" lists the
optimiser steps, each a list of micro-batches, each a list of examples or
of indices into "examples".
"""

import argparse
import json
import math
import os
import random
import re
import statistics
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
IGNORE = -100
ROWS = [1939, 3869]  # ▁No, ▁Yes (LLaMA tokenizer); P(Yes) = softmax(logits[ROWS])[1]
H200_BF16 = 790e12  # dense bf16 FLOP/s, GPU.md
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LORA_NAME = re.compile(r"^base_model\.model\.(.+)\.lora_([AB])\.weight$")


# --- helpers without torch ---------------------------------------------------------

def die(msg):
    print(f"hf_peft.py: {msg}", file=sys.stderr)
    sys.exit(2)


def read_safetensors_header(path):
    """The header of a safetensors file ({name: {dtype, shape, data_offsets}}),
    read without torch; validates the offsets against the file size."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: shorter than 8 bytes")
        n = struct.unpack("<Q", raw)[0]
        if n > size - 8:
            raise ValueError(f"{path}: header length {n} beyond the file ({size} bytes)")
        hdr = json.loads(f.read(n))
    hdr.pop("__metadata__", None)
    data = size - 8 - n
    for name, t in hdr.items():
        b, e = t["data_offsets"]
        if not (0 <= b <= e <= data):
            raise ValueError(f"{path}: tensor {name}: offsets {b}..{e} outside the data ({data} bytes)")
    return hdr


def check_adapter_files(adapter):
    """Reads a rella/PEFT adapter folder without torch: the config, the tensor
    names and shapes; returns (config, {name: shape}). Raises ValueError."""
    cfg_path = os.path.join(adapter, "adapter_config.json")
    w_path = os.path.join(adapter, "adapter_model.safetensors")
    with open(cfg_path) as f:
        cfg = json.load(f)
    for k in ("peft_type", "r", "lora_alpha", "target_modules"):
        if k not in cfg:
            raise ValueError(f"{cfg_path}: key {k!r} missing")
    if cfg["peft_type"] != "LORA":
        raise ValueError(f"{cfg_path}: peft_type {cfg['peft_type']!r}, want LORA")
    r = int(cfg["r"])
    hdr = read_safetensors_header(w_path)
    if not hdr:
        raise ValueError(f"{w_path}: no tensors")
    shapes, mods = {}, {}
    for name, t in hdr.items():
        m = LORA_NAME.match(name)
        if not m:
            raise ValueError(f"{w_path}: tensor {name!r} is not base_model.model.<module>.lora_A|B.weight")
        if t["dtype"] not in ("F32", "F16", "BF16"):
            raise ValueError(f"{w_path}: tensor {name}: dtype {t['dtype']}")
        shape = t["shape"]
        if len(shape) != 2 or (m.group(2) == "A" and shape[0] != r) or (m.group(2) == "B" and shape[1] != r):
            raise ValueError(f"{w_path}: tensor {name}: shape {shape} does not fit rank {r}")
        if m.group(1).rsplit(".", 1)[-1] not in cfg["target_modules"]:
            raise ValueError(f"{w_path}: tensor {name}: module not in target_modules {cfg['target_modules']}")
        shapes[name] = shape
        mods.setdefault(m.group(1), set()).add(m.group(2))
    for mod, ab in mods.items():
        if ab != {"A", "B"}:
            raise ValueError(f"{w_path}: module {mod} has only lora_{''.join(sorted(ab))}")
    return cfg, shapes


def read_seqs(path):
    """Token sequences from JSON Lines of id arrays (rella tokenize's output),
    a JSON list of lists, or hf_bench.py's {"seqs": [...]}."""
    with open(path) as f:
        text = f.read()
    try:
        v = json.loads(text)
        seqs = v["seqs"] if isinstance(v, dict) else v
    except json.JSONDecodeError:
        seqs = [json.loads(l) for l in text.splitlines() if l.strip()]
    if not seqs or not all(isinstance(s, list) and s and all(isinstance(x, int) for x in s) for s in seqs):
        raise ValueError(f"{path}: want non-empty lists of token ids")
    return seqs


def check_example(ex, where):
    if not isinstance(ex, dict) or "tokens" not in ex or "labels" not in ex:
        raise ValueError(f"{where}: want {{\"tokens\", \"labels\"}}")
    t, l = ex["tokens"], ex["labels"]
    if not t or len(t) != len(l):
        raise ValueError(f"{where}: {len(t)} tokens, {len(l)} labels")
    if not all(isinstance(x, int) and x >= 0 for x in t) or not all(isinstance(x, int) and (x >= 0 or x == IGNORE) for x in l):
        raise ValueError(f"{where}: tokens must be ids >= 0, labels ids or {IGNORE}")
    return ex


def read_examples(path):
    """A micro-batch file: {"examples": [...]} or a bare list."""
    with open(path) as f:
        v = json.load(f)
    exs = v["examples"] if isinstance(v, dict) else v
    if not exs:
        raise ValueError(f"{path}: no examples")
    return [check_example(e, f"{path}: example {i}") for i, e in enumerate(exs)]


def read_steps(path):
    """A curve data file: the micro-batches of each optimiser step."""
    with open(path) as f:
        v = json.load(f)
    if not isinstance(v, dict) or "steps" not in v:
        raise ValueError(f"{path}: want {{\"examples\": [...], \"steps\": [[micro-batch, ...], ...]}}")
    pool = [check_example(e, f"{path}: example {i}") for i, e in enumerate(v.get("examples", []))]
    steps = []
    for s, micros in enumerate(v["steps"]):
        if not micros:
            raise ValueError(f"{path}: step {s} has no micro-batches")
        step = []
        for k, mb in enumerate(micros):
            batch = []
            for j, e in enumerate(mb):
                if isinstance(e, int):
                    if not 0 <= e < len(pool):
                        raise ValueError(f"{path}: step {s} micro-batch {k}: index {e} outside examples")
                    batch.append(pool[e])
                else:
                    batch.append(check_example(e, f"{path}: step {s} micro-batch {k} example {j}"))
            if not batch:
                raise ValueError(f"{path}: step {s} micro-batch {k} is empty")
            step.append(batch)
        steps.append(step)
    return steps


def rella_lr(scheduler, base, s, total, warmup):
    """trainer.LR: learning rate of (0-based) step s."""
    if s < warmup:
        return base * s / max(1, warmup)
    if scheduler == "constant":
        return base
    if scheduler == "cosine":  # get_cosine_schedule_with_warmup, 0.5 cycles
        p = (s - warmup) / max(1, total - warmup)
        return base * max(0.0, 0.5 * (1.0 + math.cos(math.pi * p)))
    return base * max(0.0, (total - s) / max(1, total - warmup))


def p_yes(no, yes):
    d = no - yes
    if d > 0:
        e = math.exp(-d)
        return e / (1 + e)
    return 1 / (1 + math.exp(d))


def file_name(live):
    """PEFT's live parameter name -> the adapter-file name (drops the adapter name)."""
    return re.sub(r"\.(lora_[AB])\.default\.weight$", r".\1.weight", live)


def write_json(path, v):
    with open(path, "w") as f:
        json.dump(v, f, indent=1)
        f.write("\n")


# --- torch side ------------------------------------------------------------------

def torch_setup(seed):
    # The GPU machine has no network: never wait on the Hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    torch.manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if not torch.cuda.is_available():
        die("CUDA is not available (this script runs on the GPU machine)")
    return torch


def versions():
    import torch, transformers, peft
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "gpu": torch.cuda.get_device_name()}


def dtype_of(name):
    import torch
    return {"float32": torch.float32, "bf16": torch.bfloat16}[name]


def load_base(model_dir, dtype, attn="sdpa"):
    from transformers import LlamaForCausalLM
    import torch
    import transformers
    # transformers >= 4.56 names the argument dtype (torch_dtype before);
    # an unknown keyword would be taken as a config override, so choose by
    # version and check the result.
    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    m = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation=attn, **{key: dtype})
    if next(m.parameters()).dtype != dtype:
        m = m.to(dtype)
    m.config.use_cache = False
    return m.to("cuda")


def lora_params(pm):
    """{file name: parameter} of a PeftModel's LoRA A/B tensors."""
    out = {}
    for n, p in pm.named_parameters():
        if ".lora_A." in n or ".lora_B." in n:
            out[file_name(n)] = p
    return out


def make_peft(model_dir, dtype, r, alpha, dropout, targets):
    from peft import LoraConfig, get_peft_model
    base = load_base(model_dir, dtype)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none",
                     task_type="CAUSAL_LM")
    pm = get_peft_model(base, cfg)
    return pm


def init_lora(pm, init_file, seed, out_dir):
    """Sets the LoRA tensors from init_file (exact name set required) or from a
    seeded N(0, 0.01^2) draw saved to out_dir/lora_init.safetensors."""
    import torch
    from safetensors.torch import load_file, save_file
    params = lora_params(pm)
    if init_file:
        src = load_file(init_file)
        missing = sorted(set(params) - set(src))
        extra = sorted(set(src) - set(params))
        if missing or extra:
            die(f"{init_file}: LoRA names differ from the model's: missing {missing[:3]} ({len(missing)}), "
                f"unexpected {extra[:3]} ({len(extra)})")
        with torch.no_grad():
            for n, p in params.items():
                if tuple(src[n].shape) != tuple(p.shape):
                    die(f"{init_file}: tensor {n}: shape {tuple(src[n].shape)}, model {tuple(p.shape)}")
                p.copy_(src[n].to(p.dtype))
        return init_file
    g = torch.Generator().manual_seed(seed)
    vals = {}
    with torch.no_grad():
        for n in sorted(params):
            v = torch.randn(tuple(params[n].shape), generator=g) * 0.01
            params[n].copy_(v.to(params[n].dtype))
            vals[n] = params[n].detach().float().cpu().contiguous()
    path = os.path.join(out_dir, "lora_init.safetensors")
    save_file(vals, path, metadata={"format": "pt"})
    return path


def example_loss(pm, ex, torch):
    """Summed cross-entropy of one example, rella's alignment (logits[t] vs labels[t])."""
    import torch.nn.functional as F
    ids = torch.tensor([ex["tokens"]], device="cuda")
    lab = torch.tensor(ex["labels"], device="cuda")
    logits = pm(input_ids=ids).logits[0].float()
    n = int((lab != IGNORE).sum())
    return F.cross_entropy(logits, lab, ignore_index=IGNORE, reduction="sum"), n


def vicuna_system(root):
    """VICUNA_SYSTEM, checked against prompt.VicunaSystem in the Go source when
    the tree has it (so a change there cannot go unnoticed here)."""
    src = os.path.join(root, "prompt", "prompt.go")
    if os.path.exists(src):
        with open(src) as f:
            m = re.search(r'const VicunaSystem = "((?:[^"\\]|\\.)*)"', f.read())
        if not m:
            raise ValueError(f"{src}: const VicunaSystem not found")
        if json.loads('"' + m.group(1) + '"') != VICUNA_SYSTEM:
            raise ValueError(f"{src}: VicunaSystem differs from hf_peft.py's VICUNA_SYSTEM")
    return VICUNA_SYSTEM


def cmd_vicuna(a):
    """rella prompts' JSON Lines {"input", ...} on stdin -> JSON strings of
    prompt.Vicuna(input) ("{system} USER: {prompt} ASSISTANT:") on stdout, the
    input `rella tokenize --bos` encodes the way the scorer does."""
    system = vicuna_system(os.path.dirname(HERE))
    n = 0
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(system + " USER: " + json.loads(line)["input"] + " ASSISTANT:", ensure_ascii=False))
            n += 1
    if n == 0:
        raise ValueError("vicuna: no prompts on stdin")
    return 0


def cmd_make_model(a):
    torch = torch_setup(a.seed)
    sys.path.insert(0, HERE)
    import hf_bench
    t0 = time.perf_counter()
    m = hf_bench.make_checkpoint(a.out, a.shape, a.seed, a.layers)
    layers = m.config.num_hidden_layers
    del m
    torch.cuda.empty_cache()
    print(f"INFO hf_peft: made {a.shape} checkpoint ({layers} layers) in {a.out} in {time.perf_counter() - t0:.1f}s")


def cmd_make_data(a):
    rng = random.Random(a.seed)
    exs = []
    for _ in range(a.examples):
        n = rng.randint(a.min_len, a.max_len)
        toks = [1] + [rng.randrange(3, a.vocab) for _ in range(n - 1)]
        labs = [IGNORE] * n
        for t in range(max(0, n - 1 - a.label_last), n - 1):  # rella: Labels[t] = Tokens[t+1]; none at the end
            labs[t] = toks[t + 1]
        exs.append({"tokens": toks, "labels": labs})
    out = {"examples": exs, "seed": a.seed}
    if a.steps:
        per = a.micro_batch * a.accum
        order, epoch, pos, steps = [], 0, 0, []
        for _ in range(a.steps):
            step = []
            for _ in range(a.accum):
                mb = []
                while len(mb) < a.micro_batch:
                    if pos == len(order):
                        order = list(range(len(exs)))
                        random.Random(a.seed + epoch).shuffle(order)
                        epoch, pos = epoch + 1, 0
                    mb.append(order[pos])
                    pos += 1
                step.append(mb)
            steps.append(step)
        out.update(steps=steps, micro_batch=a.micro_batch, accum=a.accum, batch=per)
    with open(a.out, "w") as f:
        json.dump(out, f)
    print(f"INFO hf_peft: wrote {len(exs)} examples{f', {a.steps} steps' if a.steps else ''} to {a.out}")


def cmd_load_adapter(a):
    cfg, shapes = check_adapter_files(a.adapter)
    seqs = read_seqs(a.seqs) if a.seqs else None
    if a.dry_run:
        print(f"DRY load-adapter: adapter {a.adapter}: r={cfg['r']} alpha={cfg['lora_alpha']} "
              f"targets={cfg['target_modules']} tensors={len(shapes)}; seqs={len(seqs) if seqs else 'random'}")
        return 0
    torch = torch_setup(a.seed)
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file, save_file
    os.makedirs(a.out, exist_ok=True)
    dtype = dtype_of(a.dtype)
    base = load_base(a.model, dtype)
    vocab = base.config.vocab_size
    if seqs is None:
        rng = random.Random(a.seed)
        seqs = [[1] + [rng.randrange(3, vocab) for _ in range(rng.randint(8, 64))] for _ in range(8)]
    pm = PeftModel.from_pretrained(base, a.adapter, is_trainable=False)
    pm.eval()
    fails = []

    # 1. every tensor loaded, both ways, bit for bit.
    src = load_file(os.path.join(a.adapter, "adapter_model.safetensors"))
    live = lora_params(pm)
    try:  # save_embedding_layers="auto" (the default) may look the base model up on the Hub
        sd = get_peft_model_state_dict(pm, save_embedding_layers=False)
    except TypeError:
        sd = get_peft_model_state_dict(pm)
    for what, names in (("live parameters", set(live)), ("get_peft_model_state_dict", set(sd))):
        missing, extra = sorted(set(src) - names), sorted(names - set(src))
        if missing or extra:
            fails.append(f"{what}: {len(missing)} file tensors not in the model (e.g. {missing[:2]}), "
                         f"{len(extra)} model LoRA tensors not in the file (e.g. {extra[:2]})")
    mismatched = [n for n in src if n in live and not torch.equal(live[n].detach().cpu(), src[n].to(live[n].dtype))]
    if mismatched:
        fails.append(f"{len(mismatched)} tensors differ from the file (e.g. {mismatched[:2]})")
    zero_b = all(float(v.abs().max()) == 0 for n, v in src.items() if ".lora_B." in n)

    # 2. logits: PEFT, base, and base with the adapter merged by hand.
    scale = float(cfg["lora_alpha"]) / int(cfg["r"])

    @torch.inference_mode()
    def last_logits():
        return torch.stack([pm(input_ids=torch.tensor([s], device="cuda")).logits[0, -1].float() for s in seqs])

    peft_logits = last_logits()
    with pm.disable_adapter():
        base_logits = last_logits()
        saved = {}
        with torch.no_grad():
            for n, t in src.items():
                m = LORA_NAME.match(n)
                if m.group(2) != "A":
                    continue
                mod = pm.get_submodule("base_model.model." + m.group(1))
                w = mod.base_layer.weight
                saved[m.group(1)] = w.detach().clone()
                A = t.to("cuda", torch.float32)
                B = src[n.replace(".lora_A.", ".lora_B.")].to("cuda", torch.float32)
                w.copy_((w.float() + scale * (B @ A)).to(w.dtype))
        merged_logits = last_logits()
        with torch.no_grad():
            for mod_name, w0 in saved.items():
                pm.get_submodule("base_model.model." + mod_name).base_layer.weight.copy_(w0)

    def rel(x, y):
        return float((x - y).norm() / y.norm().clamp_min(1e-30))

    merge_err = rel(peft_logits, merged_logits)
    effect = rel(peft_logits, base_logits)
    merge_tol = 1e-5 if a.dtype == "float32" else 2e-2
    if not (merge_err <= merge_tol):
        fails.append(f"PEFT logits vs hand-merged: rel. error {merge_err:.3g} > {merge_tol}")
    if not torch.isfinite(peft_logits).all():
        fails.append("non-finite PEFT logits")
    if effect == 0 and not zero_b:
        fails.append("the adapter does not change the logits although lora_B is non-zero")

    # 3. P(Yes) against rella's predictions.
    pv = [p_yes(float(l[ROWS[0]]), float(l[ROWS[1]])) for l in peft_logits.cpu()]
    pb = [p_yes(float(l[ROWS[0]]), float(l[ROWS[1]])) for l in base_logits.cpu()]
    res = dict(adapter=a.adapter, model=a.model, dtype=a.dtype, n=len(seqs), tensors=len(src), r=cfg["r"],
               lora_alpha=cfg["lora_alpha"], target_modules=cfg["target_modules"], lora_b_all_zero=zero_b,
               peft_vs_merged_rel=merge_err, peft_vs_base_rel=effect, p_yes=pv, p_yes_base=pb,
               adapter_effect_p=max(abs(x - y) for x, y in zip(pv, pb)), versions=versions())
    if a.rella_pred:
        preds = {}
        with open(a.rella_pred) as f:
            for l in f:
                if l.strip():
                    d = json.loads(l)
                    preds[d["index"]] = d["p"]
        if any(i not in preds for i in range(len(seqs))):
            fails.append(f"{a.rella_pred}: indices 0..{len(seqs) - 1} not all present")
        else:
            diffs = [abs(pv[i] - preds[i]) for i in range(len(seqs))]
            res.update(rella_p=[preds[i] for i in range(len(seqs))], max_abs_dp=max(diffs))
            if not max(diffs) <= a.tol:
                fails.append(f"P(Yes) vs rella: max |dp| {max(diffs):.3g} > {a.tol}")
            if res["adapter_effect_p"] <= 10 * max(diffs):
                print(f"WARN hf_peft: the adapter moves P(Yes) by at most {res['adapter_effect_p']:.3g}, "
                      f"not well above the rella gap {max(diffs):.3g}: a weak check", flush=True)
    res["fails"] = fails
    save_file({"logits": peft_logits.cpu().contiguous(), "base_logits": base_logits.cpu().contiguous(),
               "merged_logits": merged_logits.cpu().contiguous()}, os.path.join(a.out, "adapter_logits.safetensors"))
    write_json(os.path.join(a.out, "adapter_check.json"), res)
    status = "PASS" if not fails else "FAIL"
    dp = f" max|dp|_vs_rella={res['max_abs_dp']:.2e}" if "max_abs_dp" in res else ""
    print(f"CHECK peft_load_adapter {status} tensors={len(src)} n={len(seqs)} peft_vs_merged={merge_err:.2e} "
          f"adapter_effect={effect:.2e}{dp}" + ("" if not fails else " : " + "; ".join(fails)), flush=True)
    return 0 if not fails else 1


def cmd_step(a):
    exs = read_examples(a.batch)
    if a.lora_init:
        read_safetensors_header(a.lora_init)
    if a.dry_run:
        n = sum(sum(1 for x in e["labels"] if x != IGNORE) for e in exs)
        print(f"DRY step: {len(exs)} examples, {n} labelled tokens, r={a.r} alpha={a.alpha} "
              f"targets={a.targets} dtype={a.dtype} init={a.lora_init or 'seeded N(0,0.01^2)'}")
        return 0
    torch = torch_setup(a.seed)
    from safetensors.torch import save_file
    os.makedirs(a.out, exist_ok=True)
    pm = make_peft(a.model, dtype_of(a.dtype), a.r, a.alpha, 0.0, a.targets.split(","))
    init = init_lora(pm, a.lora_init, a.seed, a.out)
    pm.train()  # dropout is 0: train mode changes nothing else in LLaMA
    params = lora_params(pm)
    loss_sum, n_tok = 0.0, 0
    for ex in exs:  # one at a time: no padding, gradients add up
        loss, n = example_loss(pm, ex, torch)
        loss.backward()
        loss_sum += float(loss)
        n_tok += n
    grads = {}
    for name, p in params.items():
        if p.grad is None:
            die(f"no gradient for {name}")
        grads[name] = p.grad.detach().float().cpu().contiguous()
    save_file(grads, os.path.join(a.out, "grads.safetensors"), metadata={"format": "pt"})
    res = dict(loss_sum=loss_sum, n_tokens=n_tok, loss_mean=loss_sum / max(1, n_tok), dtype=a.dtype, model=a.model,
               batch=a.batch, lora_init=init, r=a.r, lora_alpha=a.alpha, targets=a.targets.split(","),
               grad_norm=math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values())),
               label_convention="loss = sum_t CE(logits[t], labels[t]); HF labels = [-100] + labels[:-1]",
               versions=versions())
    # The documented HF equivalence, checked with HF's own (shifting) loss.
    if all(ex["labels"][-1] == IGNORE for ex in exs):
        hf_sum = 0.0
        with torch.no_grad():
            for ex in exs:
                lab = [IGNORE] + ex["labels"][:-1]
                n = sum(1 for x in lab if x != IGNORE)
                if n:
                    out = pm(input_ids=torch.tensor([ex["tokens"]], device="cuda"),
                             labels=torch.tensor([lab], device="cuda"))
                    hf_sum += float(out.loss) * n
        res["hf_builtin_loss_sum"] = hf_sum
    write_json(os.path.join(a.out, "loss.json"), res)
    hf = f" hf_builtin_sum={res['hf_builtin_loss_sum']:.6f}" if "hf_builtin_loss_sum" in res else ""
    print(f"CHECK peft_step_{a.dtype} loss_sum={loss_sum:.6f} n={n_tok} mean={res['loss_mean']:.6f}{hf} "
          f"grad_norm={res['grad_norm']:.6g} tensors={len(grads)} -> {a.out}", flush=True)
    return 0


def read_tensors(path):
    """{name: (shape, values)} of a safetensors file of F32/BF16/F16 tensors,
    without torch or numpy (values: array of doubles)."""
    import array
    hdr = read_safetensors_header(path)
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        base = 8 + n
        out = {}
        for name, t in hdr.items():
            b, e = t["data_offsets"]
            f.seek(base + b)
            raw = f.read(e - b)
            if t["dtype"] == "F32":
                v = array.array("f")
                v.frombytes(raw)
            elif t["dtype"] == "BF16":
                h = array.array("H")
                h.frombytes(raw)
                v = array.array("f")
                v.frombytes(array.array("I", (x << 16 for x in h)).tobytes())
            elif t["dtype"] == "F16":
                v = struct.unpack(f"<{len(raw) // 2}e", raw)
            else:
                raise ValueError(f"{path}: tensor {name}: dtype {t['dtype']} not supported")
            if sys.byteorder != "little" and t["dtype"] != "F16":
                v.byteswap()
            count = 1
            for d in t["shape"]:
                count *= d
            if len(v) != count:
                raise ValueError(f"{path}: tensor {name}: {len(v)} values for shape {t['shape']}")
            out[name] = (t["shape"], array.array("d", v))
    return out


def cmd_compare(a):
    x, y = read_tensors(a.a), read_tensors(a.b)
    if set(x) != set(y):
        die(f"different names: only in {a.a}: {sorted(set(x) - set(y))[:3]}, only in {a.b}: {sorted(set(y) - set(x))[:3]}")
    worst, num, den, dot, nx = ("", 0.0), 0.0, 0.0, 0.0, 0.0
    for n in sorted(x):
        (su, u), (sv, v) = x[n], y[n]
        if su != sv:
            die(f"tensor {n}: shapes {su} and {sv}")
        if not all(math.isfinite(t) for t in u) or not all(math.isfinite(t) for t in v):
            die(f"tensor {n}: non-finite values")
        d2 = math.fsum((p - q) ** 2 for p, q in zip(u, v))
        v2 = math.fsum(q * q for q in v)
        e = math.sqrt(d2) / max(math.sqrt(v2), 1e-30)
        if e > worst[1] or not worst[0]:
            worst = (n, e)
        num += d2
        den += v2
        dot += math.fsum(p * q for p, q in zip(u, v))
        nx += math.fsum(p * p for p in u)
    rel = math.sqrt(num / max(den, 1e-300))
    cos = dot / max(math.sqrt(nx * den), 1e-300)
    ok = rel <= a.tol and cos >= a.min_cos
    print(f"CHECK grads_compare {'PASS' if ok else 'FAIL'} tensors={len(x)} global_rel={rel:.3e} cosine={cos:.6f} "
          f"worst={worst[0]} {worst[1]:.3e} (tol {a.tol}, min cos {a.min_cos})", flush=True)
    return 0 if ok else 1


def flops_per_token(model, seq_len):
    """GPU.md: 4 N' + 4 V d + 3 A, N' without embedding, LM head and final norm."""
    cfg = model.config
    total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    V, d, L = cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers
    emb = V * d * (1 if cfg.tie_word_embeddings else 2)
    nonemb = total - emb - d
    attn = 4 * seq_len * d * L
    return 4 * nonemb + 4 * V * d + 3 * attn, nonemb


def cmd_bench(a):
    lens = [int(x) for x in a.seq_lens.split(",")]
    if a.dry_run:
        print(f"DRY bench: model {a.model}, micro-batch {a.micro_batch}, lens {lens}, {a.warmup}+{a.steps} steps")
        return 0
    torch = torch_setup(a.seed)
    t0 = time.perf_counter()
    pm = make_peft(a.model, torch.bfloat16, 8, 16, 0.05, ["q_proj", "v_proj"])
    pm.train()
    print(f"INFO hf_peft: loaded {a.model} in {time.perf_counter() - t0:.1f}s ({versions()}, "
          f"attention {pm.get_base_model().config._attn_implementation}, lora dtype "
          f"{next(iter(lora_params(pm).values())).dtype})", flush=True)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-3)
    V = pm.get_base_model().config.vocab_size
    rows = []
    for L in lens:
        g = torch.Generator().manual_seed(a.seed + L)
        ids = torch.randint(3, V, (a.micro_batch, L), generator=g)
        labels = torch.full_like(ids, IGNORE)
        labels[:, L - a.label_last:] = torch.randint(3, V, (a.micro_batch, a.label_last), generator=g)
        ids, labels = ids.cuda(), labels.cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fb, st = [], []
        for i in range(a.warmup + a.steps):
            e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            e0.record()
            loss = pm(input_ids=ids, labels=labels).loss
            loss.backward()
            e1.record()
            opt.step()
            opt.zero_grad(set_to_none=True)
            e2.record()
            torch.cuda.synchronize()
            if not math.isfinite(float(loss)):
                die(f"len {L}: loss {float(loss)}")
            if i >= a.warmup:
                fb.append(e0.elapsed_time(e1) / 1e3)
                st.append(e0.elapsed_time(e2) / 1e3)
        peak = torch.cuda.max_memory_allocated() / 2**30
        fpt, nonemb = flops_per_token(pm.get_base_model(), L)
        tokens = a.micro_batch * L
        med, meds = statistics.median(fb), statistics.median(st)
        row = dict(batch=a.micro_batch, len=L, tokens=tokens, labelled=a.micro_batch * a.label_last, reps=a.steps,
                   median_s=med, tokens_per_s=tokens / med, tflops=fpt * tokens / med / 1e12,
                   mfu=fpt * tokens / med / H200_BF16, step_median_s=meds, step_tokens_per_s=tokens / meds,
                   peak_gib=peak, nonemb_params=nonemb, last_loss=float(loss))
        rows.append(row)
        print(f"BENCH hf_train_lossgrad batch={a.micro_batch} len={L} tokens={tokens} labelled={row['labelled']} "
              f"reps={a.steps} median_s={med:.4f} tokens_per_s={row['tokens_per_s']:.0f} tflops={row['tflops']:.1f} "
              f"mfu={row['mfu']:.3f} step_tokens_per_s={row['step_tokens_per_s']:.0f} peak_gib={peak:.2f}", flush=True)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        write_json(os.path.join(a.out, "hf_train_bench.json"), dict(rows=rows, model=a.model, versions=versions()))
    return 0


def cmd_curve(a):
    steps = read_steps(a.data)
    n = min(a.steps, len(steps)) if a.steps else len(steps)
    if a.lora_init:
        read_safetensors_header(a.lora_init)
    if a.compare_log and not os.path.exists(a.compare_log):
        die(f"{a.compare_log}: no such file")
    total = a.total_steps or len(steps)
    if a.dry_run:
        print(f"DRY curve: {n} steps of {len(steps)} in {a.data} (micro-batches per step: {len(steps[0])}), "
              f"lr {a.lr} {a.scheduler} total {total} warmup {a.warmup}, dtype {a.dtype}")
        return 0
    torch = torch_setup(a.seed)
    os.makedirs(a.out, exist_ok=True)
    pm = make_peft(a.model, dtype_of(a.dtype), a.r, a.alpha, a.dropout, a.targets.split(","))
    init = init_lora(pm, a.lora_init, a.seed, a.out)
    pm.train()
    params = list(lora_params(pm).values())
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps, weight_decay=a.weight_decay)
    log = []
    with open(os.path.join(a.out, "log.jsonl"), "w") as f:
        for s in range(n):
            loss_sum, n_tok = 0.0, 0
            for mb in steps[s]:
                for ex in mb:
                    loss, k = example_loss(pm, ex, torch)
                    loss.backward()
                    loss_sum += float(loss)
                    n_tok += k
            if n_tok == 0:
                die(f"step {s + 1}: no labelled tokens")
            for p in params:
                p.grad.div_(n_tok)
            norm = float(torch.nn.utils.clip_grad_norm_(params, a.max_grad_norm if a.max_grad_norm > 0 else float("inf")))
            lr = rella_lr(a.scheduler, a.lr, s, total, a.warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)
            rec = {"step": s + 1, "loss": loss_sum / n_tok, "lr": lr, "grad_norm": norm, "tokens": n_tok}
            log.append(rec)
            f.write(json.dumps(rec) + "\n")
            f.flush()
    msg = f"CHECK peft_curve_{a.dtype} steps={n} first_loss={log[0]['loss']:.5f} last_loss={log[-1]['loss']:.5f}"
    if a.compare_log:
        other = {}
        with open(a.compare_log) as f:
            for l in f:
                d = json.loads(l) if l.strip() else {}
                if "loss" in d and d.get("loss") is not None:
                    other[d["step"]] = d["loss"]
        gaps = [abs(r["loss"] - other[r["step"]]) for r in log if r["step"] in other]
        if gaps:
            msg += f" vs {a.compare_log}: {len(gaps)} steps, max |dloss| {max(gaps):.4f}, first {gaps[0]:.2e}"
        else:
            msg += f" vs {a.compare_log}: no common steps"
    write_json(os.path.join(a.out, "curve.json"), dict(log=log, lora_init=init, data=a.data, versions=versions()))
    print(msg, flush=True)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="See the module docstring for details.")
    ap.add_argument("--dry-run", action="store_true", help="check arguments and inputs without torch")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def lora_flags(p):
        p.add_argument("--r", type=int, default=8)
        p.add_argument("--alpha", type=float, default=16)
        p.add_argument("--targets", default="q_proj,v_proj")
        p.add_argument("--dtype", default="float32", choices=["float32", "bf16"])
        p.add_argument("--lora-init", help="safetensors with the PEFT file names (e.g. adapter_model.safetensors)")

    p = sub.add_parser("make-model", help="seeded random LLaMA checkpoint (hf_bench.make_checkpoint)")
    p.add_argument("--out", required=True)
    p.add_argument("--shape", default="tiny", choices=["tiny", "small", "7b"])
    p.add_argument("--layers", type=int, help="decoder layers (default: the shape's), e.g. 8 for 7B width with 8 of 32")
    p.add_argument("--seed", type=int, default=1)

    p = sub.add_parser("make-data", help="seeded random examples (rella labels) and a data order")
    p.add_argument("--out", required=True)
    p.add_argument("--examples", type=int, default=16)
    p.add_argument("--min-len", type=int, default=24)
    p.add_argument("--max-len", type=int, default=48)
    p.add_argument("--label-last", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)

    sub.add_parser("vicuna", help="wrap rella prompts (JSONL on stdin) in the Vicuna template, as JSON strings")

    p = sub.add_parser("load-adapter", help="load a rella adapter with peft and check it")
    p.add_argument("--model", required=True)
    p.add_argument("--adapter", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seqs", help="token sequences (JSONL of id arrays, or JSON); default: 8 random")
    p.add_argument("--rella-pred", help="rella predictions.jsonl for the same sequences (index order)")
    p.add_argument("--tol", type=float, default=1e-3, help="max |P(Yes) peft - rella|")
    p.add_argument("--dtype", default="float32", choices=["float32", "bf16"])
    p.add_argument("--seed", type=int, default=1)

    p = sub.add_parser("step", help="one LoRA micro-batch: loss and gradients")
    p.add_argument("--model", required=True)
    p.add_argument("--batch", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1)
    lora_flags(p)

    p = sub.add_parser("compare", help="compare two gradient files")
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--tol", type=float, default=0.1)
    p.add_argument("--min-cos", type=float, default=0.99)

    p = sub.add_parser("bench", help="HF peft training throughput")
    p.add_argument("--model", required=True)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seq-lens", default="512")
    p.add_argument("--label-last", type=int, default=32)
    p.add_argument("--out")
    p.add_argument("--seed", type=int, default=1)

    p = sub.add_parser("curve", help="loss curve with a fixed data order")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--scheduler", default="linear", choices=["linear", "cosine", "constant"])
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--total-steps", type=int, default=0, help="for the schedule; default: the steps in --data")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--compare-log", help="a rella log.jsonl to compare the losses with")
    p.add_argument("--seed", type=int, default=1)
    lora_flags(p)

    a = ap.parse_args(argv)
    try:
        if a.cmd == "make-model":
            if a.dry_run:
                print(f"DRY make-model: {a.shape} -> {a.out}")
                return 0
            return cmd_make_model(a) or 0
        if a.cmd == "make-data":
            if a.min_len < 2 or a.max_len < a.min_len or a.label_last < 1:
                die("make-data: need 2 <= --min-len <= --max-len and --label-last >= 1")
            return cmd_make_data(a) or 0
        if a.cmd == "compare" and a.dry_run:
            for f in (a.a, a.b):
                read_safetensors_header(f)
            print(f"DRY compare: {a.a} vs {a.b}")
            return 0
        return {"vicuna": cmd_vicuna, "load-adapter": cmd_load_adapter, "step": cmd_step, "compare": cmd_compare, "bench": cmd_bench,
                "curve": cmd_curve}[a.cmd](a)
    except (ValueError, OSError, KeyError) as e:
        die(f"{a.cmd}: {e}")


if __name__ == "__main__":
    sys.exit(main())
