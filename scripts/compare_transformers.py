#!/usr/bin/env python3
"""Optional: the same workloads as examples/bench_forward.rs and examples/bench_generate.rs,
with Python transformers (see scripts/bench-vs-transformers.sh, which runs both side by side).

    pip install torch transformers
    python3 scripts/compare_transformers.py capture  [MODEL_DIR] [BATCHES]
    python3 scripts/compare_transformers.py generate [MODEL_DIR] [PROMPTS] [NEW_TOKENS] [BATCH]

capture: batches of 16 left-padded ~64-token chat prompts (file order, as transformers users
batch them), every layer's hidden states at the last position (output_hidden_states), float32.
generate: greedy batched generation with the KV cache (model.generate), float32.
Threads: SCALPEL_THREADS (default 2), also used by torch.set_num_threads.
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
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
here = os.path.dirname(os.path.abspath(__file__))
lines = [l.strip() for l in open(os.path.join(here, "../recipes/prompts/harmless_train.txt")) if l.strip()]


def chat(p):
    return tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)


with torch.inference_mode():
    if mode == "capture":
        batches = int(sys.argv[3]) if len(sys.argv) > 3 else 8
        joined = [" And also: ".join(lines[i:i + 2]) for i in range(0, len(lines), 2)]
        texts = [chat(p) for p in joined]
        real, tokens, start = 0, 0, time.time()
        for b in range(batches):
            chunk = [texts[(b * 16 + i) % len(texts)] for i in range(16)]
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.model(**enc, output_hidden_states=True)
            _ = [h[:, -1, :].clone() for h in out.hidden_states]
            tokens += enc["input_ids"].numel()
            real += int(enc["attention_mask"].sum())
        secs = time.time() - start
        print(f"transformers capture: {batches} batches of 16: {real / secs:.1f} real (non-pad) tokens/s, "
              f"{tokens / secs:.1f} tokens/s with padding, {secs:.2f} s")
    else:
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 40
        new = int(sys.argv[4]) if len(sys.argv) > 4 else 40
        batch = int(sys.argv[5]) if len(sys.argv) > 5 else 20
        texts = [chat(lines[i % len(lines)]) for i in range(n)]
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        generated, start = 0, time.time()
        for i in range(0, n, batch):
            enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                # count up to (not including) the first stop token, as scalpel does
                stops = [j for j, t in enumerate(row) if t in eos]
                generated += stops[0] if stops else len(row)
        secs = time.time() - start
        print(f"transformers generate: {n} prompts x {new} new tokens, batch {batch}: {n / secs:.2f} prompts/s, "
              f"{generated / secs:.1f} new tokens/s ({generated} tokens), {secs:.2f} s")
