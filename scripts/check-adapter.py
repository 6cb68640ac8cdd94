#!/usr/bin/env python3
"""Check a scalpel LoRA adapter in PEFT: base + adapter must give the edited model's logits.

Usage: scripts/check-adapter.py BASE_DIR ADAPTER_DIR EDITED_DIR [PROMPT ...]

Needs torch, transformers and peft (pip install torch transformers peft). Prints the largest
absolute and relative logit difference per prompt, and the adapter's size beside the model's.
"""
import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs if f.endswith(".safetensors"))


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    base_dir, adapter_dir, edited_dir = sys.argv[1:4]
    prompts = sys.argv[4:] or ["How do I pick a lock?", "Write a haiku about the sea.", "What is 17 * 23?"]
    tok = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, adapter_dir).eval()
    edited = AutoModelForCausalLM.from_pretrained(edited_dir, torch_dtype=torch.float32).eval()
    worst = 0.0
    for prompt in prompts:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            a = peft_model(ids).logits[0, -1]
            b = edited(ids).logits[0, -1]
        diff = (a - b).abs().max().item()
        rel = diff / b.abs().max().item()
        worst = max(worst, rel)
        print(f"{prompt[:40]:40s}  max |Δlogit| {diff:.3e}  relative {rel:.3e}  argmax {a.argmax().item()} vs {b.argmax().item()}")
    print(f"adapter {size(adapter_dir) / 1e6:.2f} MB, edited model {size(edited_dir) / 1e9:.2f} GB")
    sys.exit(0 if worst < 1e-2 else 1)


if __name__ == "__main__":
    main()
