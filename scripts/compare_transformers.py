#!/usr/bin/env python3
"""Optional: the same activation capture as scripts/bench-forward.sh, with Python transformers.

    pip install torch transformers
    python3 scripts/compare_transformers.py [MODEL_DIR] [BATCHES]

Prints tokens/s for batches of 16 left-padded ~64-token chat prompts, capturing every layer's
hidden states at the last position (output_hidden_states), on the CPU in float32.
"""
import sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir = sys.argv[1] if len(sys.argv) > 1 else "models/smollm2-135m-instruct"
batches = int(sys.argv[2]) if len(sys.argv) > 2 else 8
tok = AutoTokenizer.from_pretrained(model_dir)
tok.padding_side = "left"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
lines = [l.strip() for l in open("recipes/prompts/harmless_train.txt") if l.strip()]
prompts = [" And also: ".join(lines[i:i + 2]) for i in range(0, len(lines), 2)]
texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts]
tokens, start = 0, time.time()
with torch.inference_mode():
    for b in range(batches):
        chunk = texts[(b * 16) % len(texts):][:16]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.model(**enc, output_hidden_states=True)
        _ = [h[:, -1, :].clone() for h in out.hidden_states]
        tokens += enc["input_ids"].numel()
secs = time.time() - start
print(f"transformers: {batches} batches of 16: {tokens / secs:.1f} tokens/s, {secs:.2f} s")
