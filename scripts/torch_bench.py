#!/usr/bin/env python3
"""The PyTorch + transformers + peft side of the GPU benchmarks, on the same machine and the same shapes as
`lori bench-gpu --shapes llama3-8b` (LoRI.Cuda.Bench.GpuBench), so that every figure of ours becomes a ratio
measured in one run (scripts/gpu-check.sh runs both, then this script's `compare`).

    torch_bench.py measure --out torch.json [--layers 32]     needs torch, transformers, peft and a GPU
    torch_bench.py compare --ours bench.json --torch torch.json --out comparison.md

What is measured, on a randomly initialised Llama-3-8B-shaped model in bf16 (no checkpoint needed):
  - training: one step (forward, backward, per-tensor gradient clipping, AdamW) at 2 x 512 tokens for LoRA
    (A and B trained), LoRI-D (A frozen) and LoRI-S (A frozen, B's gradient masked to a random 10%: the reference
    implementation's way, a dense B and a mask multiply), rank 64, alpha 128, all seven projections; tokens/s
    and the peak memory the step adds over the model;
  - prefill: one forward of 2048 tokens, tokens/s;
  - decode: greedy generation at batch 1 after a 512-token prompt (transformers' generate, dynamic cache), tokens/s
    of the decode part, with the LoRI-S adapter unmerged (peft) and merged into the weights.
Our engine keeps fp32 activations and an fp32 adapter; PyTorch here runs bf16 activations with peft's default
adapter dtype. The comparison says so next to each ratio.
"""
import argparse
import json
import sys
import time

SHAPES = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
              num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=8192,
              rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
              rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA, SPARSITY = 64, 128, 0.9
TRAIN_BATCH, TRAIN_SEQ = 2, 512
PREFILL, CONTEXT, DECODE = 2048, 512, 64


def measure(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    dev = torch.device("cuda")
    cfg = LlamaConfig(**{**SHAPES, "num_hidden_layers": args.layers})
    torch.set_default_dtype(torch.bfloat16)
    with dev:
        base = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    base.eval()
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "layers": args.layers,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        import transformers, peft
        out["transformers"], out["peft"] = transformers.__version__, peft.__version__
    except Exception:
        pass

    def sync_time(fn, repeats):
        fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / repeats

    gen = torch.Generator(device=dev).manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (TRAIN_BATCH, TRAIN_SEQ), device=dev, generator=gen)

    out["training"] = {}
    for method in ["lora", "lori-d", "lori-s"]:
        model = get_peft_model(base, LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0,
                                                init_lora_weights=True))
        masks = {}
        for name, p in model.named_parameters():
            if "lora_A" in name and method != "lora":
                p.requires_grad_(False)
            if "lora_B" in name and method == "lori-s":
                masks[name] = (torch.rand(p.shape, device=dev, generator=gen) >= SPARSITY).to(p.dtype)
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        opt = torch.optim.AdamW([p for _, p in params], lr=1e-4, weight_decay=0.0)
        model.train()
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        state = {}

        def step():
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            for n, p in params:
                if n in masks:
                    p.grad.mul_(masks[n])
                torch.nn.utils.clip_grad_norm_(p, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            state["loss"] = float(loss)

        s = sync_time(step, 3)
        out["training"][method] = {
            "tokens_per_s": TRAIN_BATCH * TRAIN_SEQ / s, "step_ms": s * 1e3, "loss": state["loss"],
            "trainable_parameters": sum(int(masks[n].sum()) if n in masks else p.numel() for n, p in params),
            "training_peak_bytes": torch.cuda.max_memory_allocated() - before,
            "adapter_dtype": str(next(p for _, p in params).dtype),
        }
        del opt, params, masks
        base = model.unload()
        torch.cuda.empty_cache()

    base.eval()
    with torch.no_grad():
        pre = torch.randint(0, cfg.vocab_size, (1, PREFILL), device=dev, generator=gen)
        s = sync_time(lambda: base(input_ids=pre, use_cache=False), 3)
        out["prefill"] = {"tokens_per_s": PREFILL / s}

        prompt = torch.randint(0, cfg.vocab_size, (1, CONTEXT), device=dev, generator=gen)

        def decode_rate(m):
            def run(n):
                return m.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                  min_new_tokens=n, do_sample=False, pad_token_id=0)
            t1 = sync_time(lambda: run(1), 2)
            tn = sync_time(lambda: run(DECODE), 2)
            return (DECODE - 1) / (tn - t1)

        out["decode"] = {"tokens_per_s": decode_rate(base)}
        model = get_peft_model(base, LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0))
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, device=dev, generator=gen, dtype=torch.float32).to(p.dtype) * 0.01
                        * (torch.rand(p.shape, device=dev, generator=gen) >= SPARSITY).to(p.dtype))
        model.eval()
        unmerged = decode_rate(model)
        merged_model = model.merge_and_unload()
        merged = decode_rate(merged_model)
        out["adapter"] = {"decode_unmerged_tokens_per_s": unmerged, "decode_merged_tokens_per_s": merged,
                          "decode_overhead": merged / unmerged - 1}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))


def _get(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return None
        d = d[k]
    return d


def compare(ours, torch_, layers_note=""):
    """Rows of (figure, ours, pytorch, ratio, note); a ratio above 1 means ours is faster (or smaller, for memory)."""
    rows = []

    def row(name, a, b, higher_is_better=True, note=""):
        if a is None or b is None or b == 0 or a == 0:
            rows.append((name, a, b, None, note or "not measured on one side"))
            return
        rows.append((name, a, b, a / b if higher_is_better else b / a, note))

    row("decode tokens/s (batch 1, plain weights)", _get(ours, "decode", "tokens_per_s"), _get(torch_, "decode", "tokens_per_s"),
        note="ours: CUDA graph per step; PyTorch: transformers generate")
    row("decode tokens/s, LoRI-S unmerged", _get(ours, "adapter_overhead", "decode_tokens_per_s"),
        _get(torch_, "adapter", "decode_unmerged_tokens_per_s"))
    row("prefill tokens/s", _get(ours, "prefill", "tokens_per_s"), _get(torch_, "prefill", "tokens_per_s"),
        note="ours: fp32 activations unless bf16 staging is on")
    for m in ["lora", "lori-d", "lori-s"]:
        row(f"training tokens/s, {m}", _get(ours, "training", m, "tokens_per_s"), _get(torch_, "training", m, "tokens_per_s"),
            note="ours: fp32 activations and adapter; PyTorch: bf16 activations")
        row(f"training peak memory over the model, {m} (bytes; ratio: PyTorch / ours)",
            _get(ours, "training", m, "training_peak_bytes"), _get(torch_, "training", m, "training_peak_bytes"), higher_is_better=False)
    return rows


def compare_files(args):
    with open(args.ours) as f:
        ours = json.load(f)
    with open(args.torch) as f:
        torch_ = json.load(f)
    rows = compare(ours, torch_)
    lines = [f"GPU benchmarks, {ours.get('date', '?')}, {ours.get('device', '?')} "
             f"(PyTorch {torch_.get('torch', '?')}, transformers {torch_.get('transformers', '?')}, peft {torch_.get('peft', '?')})",
             "", "| figure | LoRI.Native | PyTorch + peft | ratio (>1: ours better) | note |", "|---|---|---|---|---|"]
    for name, a, b, r, note in rows:
        def fmt(v):
            return "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")
        lines.append(f"| {name} | {fmt(a)} | {fmt(b)} | {'-' if r is None else f'{r:.2f}'} | {note} |")
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--out", required=True)
    m.add_argument("--layers", type=int, default=SHAPES["num_hidden_layers"])
    c = sub.add_parser("compare")
    c.add_argument("--ours", required=True)
    c.add_argument("--torch", required=True)
    c.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.cmd == "measure":
        measure(args)
    else:
        compare_files(args)


if __name__ == "__main__":
    main(sys.argv[1:])
