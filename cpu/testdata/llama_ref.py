"""Independent float64 LLaMA forward in plain Python (no numpy), for tests.

Reads an HF checkpoint (config.json + model.safetensors, F32) and optionally
a safetensors file of PEFT LoRA tensors, and prints as JSON the logits at the
last position and the final-norm hidden states averaged over positions.

usage: python3 llama_ref.py MODEL_DIR ADAPTER_FILE|- SCALE TOKENS(comma-separated)
"""
import json
import math
import os
import struct
import sys


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        b, e = info["data_offsets"]
        flat = struct.unpack("<%df" % ((e - b) // 4), data[base + b : base + e])
        shape = info["shape"]
        if len(shape) == 1:
            out[name] = list(flat)
        else:
            r, c = shape
            out[name] = [list(flat[i * c : (i + 1) * c]) for i in range(r)]
    return out


def matvec(w, x):  # w [out][in]
    return [sum(a * b for a, b in zip(row, x)) for row in w]


def rmsnorm(x, w, eps):
    r = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
    return [v * r * g for v, g in zip(x, w)]


def main():
    mdir, adapter, scale, toks = sys.argv[1], sys.argv[2], float(sys.argv[3]), [int(t) for t in sys.argv[4].split(",")]
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    W = read_safetensors(os.path.join(mdir, "model.safetensors"))
    L = read_safetensors(adapter) if adapter != "-" else {}
    D, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // H
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    half = hd // 2

    def proj(layer, part, mod, x):
        y = matvec(W["model.layers.%d.%s.%s.weight" % (layer, part, mod)], x)
        key = "base_model.model.model.layers.%d.%s.%s." % (layer, part, mod)
        if key + "lora_A.weight" in L:
            a = matvec(L[key + "lora_A.weight"], x)
            b = matvec(L[key + "lora_B.weight"], a)
            y = [u + scale * v for u, v in zip(y, b)]
        return y

    def rope(vec, t, heads):
        out = list(vec)
        for h in range(heads):
            for i in range(half):
                ang = t * theta ** (-2.0 * i / hd)
                c, s = math.cos(ang), math.sin(ang)
                x1, x2 = vec[h * hd + i], vec[h * hd + i + half]
                out[h * hd + i] = x1 * c - x2 * s
                out[h * hd + i + half] = x2 * c + x1 * s
        return out

    xs = [list(W["model.embed_tokens.weight"][t]) for t in toks]
    T = len(xs)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        n = [rmsnorm(x, W[p + "input_layernorm.weight"], eps) for x in xs]
        q = [rope(proj(l, "self_attn", "q_proj", v), t, H) for t, v in enumerate(n)]
        k = [rope(proj(l, "self_attn", "k_proj", v), t, KV) for t, v in enumerate(n)]
        v = [proj(l, "self_attn", "v_proj", x) for x in n]
        att = [[0.0] * (H * hd) for _ in range(T)]
        for h in range(H):
            j = h // (H // KV)
            for t in range(T):
                sc = [sum(q[t][h * hd + c] * k[u][j * hd + c] for c in range(hd)) / math.sqrt(hd) for u in range(t + 1)]
                m = max(sc)
                e = [math.exp(s - m) for s in sc]
                z = sum(e)
                for c in range(hd):
                    att[t][h * hd + c] = sum(e[u] / z * v[u][j * hd + c] for u in range(t + 1))
        o = [proj(l, "self_attn", "o_proj", a) for a in att]
        xs = [[a + b for a, b in zip(x, y)] for x, y in zip(xs, o)]
        n = [rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps) for x in xs]
        mlp = []
        for x in n:
            g = proj(l, "mlp", "gate_proj", x)
            u = proj(l, "mlp", "up_proj", x)
            act = [a / (1 + math.exp(-a)) * b for a, b in zip(g, u)]
            mlp.append(proj(l, "mlp", "down_proj", act))
        xs = [[a + b for a, b in zip(x, y)] for x, y in zip(xs, mlp)]
    fin = [rmsnorm(x, W["model.norm.weight"], eps) for x in xs]
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    print(json.dumps({"last": matvec(head, fin[-1]), "mean_hidden": [sum(col) / T for col in zip(*fin)]}))


main()
