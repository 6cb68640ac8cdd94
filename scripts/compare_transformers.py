#!/usr/bin/env python3
"""Optional: the same workloads as examples/bench_forward.rs and examples/bench_generate.rs,
with Python transformers (see scripts/bench-vs-transformers.sh, which runs both side by side).

    pip install torch transformers
    python3 scripts/compare_transformers.py capture  [MODEL_DIR] [BATCHES]
    python3 scripts/compare_transformers.py generate [MODEL_DIR] [PROMPTS] [NEW_TOKENS] [BATCH]

capture: batches of 16 left-padded ~64-token chat prompts (file order, as transformers users
batch them), every layer's hidden states at the last position (output_hidden_states), float32.
generate: greedy batched generation with the KV cache (model.generate), float32.
Both run their first batch once untimed first (kernel loading, allocator warm-up), as the Rust
examples do.
SCALPEL_PROFILE=1: capture prints a profile of one batch first. SCALPEL_CUDNN_SDPA=0: PyTorch's
attention does not use its cuDNN backend (which sets up a new graph for each new sequence length).
Threads: SCALPEL_THREADS (default 2), also used by torch.set_num_threads. SCALPEL_DTYPE f32 (default)
or bf16; SCALPEL_DEVICE cpu (default) or cuda (the clock is read after the device synchronises).
"""
import os, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

threads = int(os.environ.get("SCALPEL_THREADS", "2"))
torch.set_num_threads(threads)
mode = sys.argv[1] if len(sys.argv) > 1 else "capture"
model_dir = sys.argv[2] if len(sys.argv) > 2 else "models/smollm2-135m-instruct"
dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[os.environ.get("SCALPEL_DTYPE", "f32")]
tok = AutoTokenizer.from_pretrained(model_dir)
tok.padding_side = "left"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
device = os.environ.get("SCALPEL_DEVICE", "cpu")
if device.startswith("cuda") and os.environ.get("SCALPEL_CUDNN_SDPA") == "0":
    torch.backends.cuda.enable_cudnn_sdp(False)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()


def sync():
    if device.startswith("cuda"):
        torch.cuda.synchronize()


here = os.path.dirname(os.path.abspath(__file__))
lines = [l.strip() for l in open(os.path.join(here, "../recipes/prompts/harmless_train.txt")) if l.strip()]


def chat(p):
    return tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)


with torch.inference_mode():
    if mode == "capture":
        batches = int(sys.argv[3]) if len(sys.argv) > 3 else 8
        joined = [" And also: ".join(lines[i:i + 2]) for i in range(0, len(lines), 2)]
        texts = [chat(p) for p in joined]

        def run(b):
            chunk = [texts[(b * 16 + i) % len(texts)] for i in range(16)]
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = model.model(**enc, output_hidden_states=True)
            # every layer's last position, read back to the host as scalpel's probe does
            _ = [h[:, -1, :].float().cpu() for h in out.hidden_states]
            return enc["input_ids"].numel(), int(enc["attention_mask"].sum())

        warm = time.time()
        run(0)
        sync()
        warm = time.time() - warm
        if os.environ.get("SCALPEL_PROFILE"):
            # one batch under the profiler: each kernel's device time, to set beside scalpel's
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                run(1)
                sync()
            print(prof.key_averages().table(sort_by="device_time_total", row_limit=40))
        real, tokens, start = 0, 0, time.time()
        for b in range(batches):
            n_tokens, n_real = run(b)
            tokens += n_tokens
            real += n_real
        sync()
        secs = time.time() - start
        print(f"transformers capture: {batches} batches of 16: {real / secs:.1f} real (non-pad) tokens/s, "
              f"{tokens / secs:.1f} tokens/s with padding, {secs:.2f} s (first batch {warm:.2f} s)")
    else:
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 40
        new = int(sys.argv[4]) if len(sys.argv) > 4 else 40
        batch = int(sys.argv[5]) if len(sys.argv) > 5 else 20
        texts = [chat(lines[i % len(lines)]) for i in range(n)]
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])

        def gen(chunk, new):
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = model.generate(**enc, max_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id)
            return enc, out

        warm = time.time()
        gen(texts[:batch], 4)
        sync()
        warm = time.time() - warm
        generated, start = 0, time.time()
        for i in range(0, n, batch):
            enc, out = gen(texts[i:i + batch], new)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                # count up to (not including) the first stop token, as scalpel does
                stops = [j for j, t in enumerate(row) if t in eos]
                generated += stops[0] if stops else len(row)
        secs = time.time() - start
        print(f"transformers generate: {n} prompts x {new} new tokens, batch {batch}: {n / secs:.2f} prompts/s, "
              f"{generated / secs:.1f} new tokens/s ({generated} tokens), {secs:.2f} s (first batch, 4 tokens, {warm:.2f} s)")
