#!/usr/bin/env bash
# What each choice of experts (`ablate --experts all|none|share:T`) leaves of the direction and
# what it costs, on a model with experts (default: the three MoE fixtures, 4 layers each):
# probe, edit with each choice, probe the edit again with every prompt's activation kept, and
# print per choice the share of `rᵀ(μ_H − μ_B)` left at the last layer (original = 1) and the
# first-token KL on harmless prompts.   scripts/measure-expert-choice.sh [MODEL_DIR…]
# Needs python3 with numpy and safetensors (PYTHON=…).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
cargo build --release --quiet --bin scalpel
s=target/release/scalpel
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
    for family in mixtral qwen2_moe qwen3_moe; do
        $s fixture "$family" --layers 4 --out "$out/$family" -q >/dev/null
        models+=("$out/$family")
    done
fi
choices=(all none share:0.25 share:0.4)
for model in "${models[@]}"; do
    name=$(basename "$model")
    $s probe "$model" --out "$out/$name-probe" --no-filter --save-activations -q >/dev/null 2>&1
    for choice in "${choices[@]}"; do
        tag=${choice/:/-}
        $s ablate "$model" --directions "$out/$name-probe/directions.safetensors" --experts "$choice" \
            --out "$out/$name-$tag" -q >/dev/null 2>&1
        $s probe "$out/$name-$tag" --out "$out/$name-$tag-probe" --no-filter --save-activations -q >/dev/null 2>&1
        $s eval "$out/$name-$tag" --original "$model" --limit 32 --max-tokens 1 --json -q 2>/dev/null \
            >"$out/$name-$tag-eval.json"
    done
    "$python" - "$out" "$name" "${choices[@]}" <<'EOF'
import json, sys
import numpy as np
from safetensors import safe_open
out, name, choices = sys.argv[1], sys.argv[2], sys.argv[3:]
def load(path):
    with safe_open(path, "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
dirs, meta = load(f"{out}/{name}-probe/directions.safetensors")
rec = f"{meta['recommended_stream']}.{meta['recommended_layer']}"
r = dirs[rec].reshape(-1)
r = r / np.linalg.norm(r)
acts, _ = load(f"{out}/{name}-probe/activations.safetensors")
last = max(int(k.rsplit(".", 1)[1]) for k in acts if ".resid_post." in k)
def gap(a):
    h, b = a[f"harmful.resid_post.{last}"], a[f"harmless.resid_post.{last}"]
    return float(r @ (h.mean(0) - b.mean(0)))
base = gap(acts)
with open(f"{out}/{name}-all/scalpel_edit.json") as f:
    experts = sum(1 for e in json.load(f)["edits"] if "part" in e and e["part"] != "shared_expert")
print(f"{name}: direction {rec}, rᵀ(μ_H − μ_B) at resid_post.{last} = {base:.4f} unedited")
print(f"  {'experts':<11} {'expert edits':>12} {'r-gap left':>10} {'KL mean':>9}")
for c in choices:
    tag = c.replace(":", "-")
    a, _ = load(f"{out}/{name}-{tag}-probe/activations.safetensors")
    with open(f"{out}/{name}-{tag}/scalpel_edit.json") as f:
        n = sum(1 for e in json.load(f)["edits"] if "part" in e and e["part"] != "shared_expert")
    with open(f"{out}/{name}-{tag}-eval.json") as f:
        ev = json.load(f)
    kl = ev.get("kl", {}).get("mean", float("nan")) if isinstance(ev.get("kl"), dict) else float("nan")
    print(f"  {c:<11} {n:>5} of {experts:<5} {gap(a) / base:>10.3f} {kl:>9.4f}")
EOF
done
