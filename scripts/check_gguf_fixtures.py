#!/usr/bin/env python3
"""Run scalpel's GGUF export of each fixture family in llama.cpp and compare its logits with
scalpel's own.

Usage:
  scripts/check_gguf_fixtures.py [--scalpel PATH] [--type f32] [FAMILY ...]

For each family: `scalpel fixture`, `scalpel export --gguf`, `scalpel generate --json` on the
folder (the prompt's token ids and the first step's logits), then llama.cpp (llama-cpp-python)
evaluates the same token ids on the GGUF. Prints the largest absolute difference of the last
position's logits per family. With a quantized --type, scalpel's logits come from the GGUF
imported back at f32 (the same rounded weights), so the difference measures the layout, not
the rounding. Needs numpy and llama-cpp-python.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

DEFAULT = ["llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gemma4_text", "phi3", "olmo2", "granite", "glm4", "smollm3", "mixtral", "qwen2_moe", "qwen3_moe"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scalpel", default="target/release/scalpel")
    ap.add_argument("--type", default="f32")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--limit", type=float, default=1e-2, help="largest difference that passes")
    ap.add_argument("families", nargs="*", default=DEFAULT)
    args = ap.parse_args()
    from llama_cpp import Llama

    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, family in enumerate(args.families):
            # Not named after the family: llama.cpp looks up Phi-3's special tokens in any file
            # whose general.name (the folder's) says "phi3", and the fixture's vocabulary has none.
            folder = os.path.join(tmp, f"fixture{i}")
            gguf = folder + ".gguf"
            run = lambda *a: subprocess.run([args.scalpel, *a, "-q"], check=True, capture_output=True, text=True)
            # llama.cpp's qwen2moe has no dense layers: the fixture's first one is made sparse too.
            sparse = ["--all-sparse"] if family == "qwen2_moe" else []
            layers = args.layers
            if family == "smollm3":
                # llama.cpp skips the rotary embedding on every fourth layer, where the fixture
                # skips it on every other one: four layers, the last without it.
                layers = max(layers, 4)
            run("fixture", family, "--out", folder, "--layers", str(layers), *sparse)
            if family == "smollm3":
                config_path = os.path.join(folder, "config.json")
                with open(config_path) as f:
                    config = json.load(f)
                config["no_rope_layers"] = [int((l + 1) % 4 != 0) for l in range(layers)]
                with open(config_path, "w") as f:
                    json.dump(config, f, indent=2)
            try:
                run("export", folder, "--gguf", gguf, "--type", args.type)
            except subprocess.CalledProcessError as e:
                print(f"{family:12} not exported: {e.stderr.strip().splitlines()[-1]}")
                continue
            reference = folder
            if args.type not in ("f32", "f16", "bf16"):
                reference = folder + "-imported"
                run("import", gguf, "--out", reference, "--store-dtype", "f32")
            out = json.loads(run("generate", reference, "--prompt", "Hello there", "--json", "--max-tokens", "1").stdout)
            ids, ours = out["prompt_ids"], np.asarray(out["first_logits"], dtype=np.float64)
            llm = Llama(model_path=gguf, n_ctx=max(64, len(ids) + 16), n_threads=2, logits_all=True, verbose=os.environ.get("VERBOSE") == "1")
            llm.eval(ids)
            theirs = np.asarray(llm.scores[len(ids) - 1], dtype=np.float64)[: len(ours)]
            diff = float(np.abs(theirs - ours).max())
            worst = max(worst, diff)
            print(f"{family:12} max |logit difference| {diff:.3e} (logits up to {np.abs(ours).max():.2f})")
            del llm
    return 0 if worst < args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
