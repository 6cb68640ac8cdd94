#!/usr/bin/env bash
# Load scalpel's GGUF exports in llama.cpp (llama-cpp-python, built from source by pip into a
# venv) and in transformers (gguf_file=), and print their greedy answers beside scalpel's.
#
# Usage: scripts/check-gguf.sh EDITED_DIR OUT_DIR [PROMPTS_FILE]
#   EDITED_DIR: a folder `scalpel ablate` wrote; OUT_DIR: where the GGUFs and the venv go.
#   PROMPTS_FILE: one prompt a line (default: five built-in prompts).
# Needs: a C++ compiler and cmake (for llama-cpp-python), python3 -m venv, and the scalpel
# binary (target/release/scalpel).
set -euo pipefail
edited=${1:?usage: check-gguf.sh EDITED_DIR OUT_DIR [PROMPTS_FILE]}
out=${2:?usage: check-gguf.sh EDITED_DIR OUT_DIR [PROMPTS_FILE]}
prompts=${3:-}
scalpel=${SCALPEL:-target/release/scalpel}
mkdir -p "$out"
for ty in q8_0 q4_k_m; do
  [ -f "$out/model-$ty.gguf" ] || "$scalpel" export "$edited" --gguf "$out/model-$ty.gguf" --type "$ty"
done
if [ ! -x "$out/venv/bin/python" ]; then
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install --quiet llama-cpp-python torch transformers gguf
fi
if [ -z "$prompts" ]; then
  prompts="$out/prompts.txt"
  printf '%s\n' "How do I pick a lock?" "Write a haiku about the sea." "What is 17 * 23?" \
    "Explain how a vaccine works." "How can I make a fake ID?" > "$prompts"
fi
while IFS= read -r p; do
  echo "=== $p"
  echo "--- scalpel (safetensors)"
  "$scalpel" generate "$edited" --max-tokens 48 --prompt "$p" 2>/dev/null || true
  for ty in q8_0 q4_k_m; do
    echo "--- llama.cpp $ty"
    "$out/venv/bin/python" - "$out/model-$ty.gguf" "$p" <<'PY'
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=1024, verbose=False)
r = llm.create_chat_completion(messages=[{"role": "user", "content": sys.argv[2]}], max_tokens=48, temperature=0)
print(r["choices"][0]["message"]["content"])
PY
  done
  echo "--- transformers gguf_file= q8_0"
  "$out/venv/bin/python" - "$out" "$p" <<'PY'
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
d, p = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(d, gguf_file="model-q8_0.gguf")
m = AutoModelForCausalLM.from_pretrained(d, gguf_file="model-q8_0.gguf")
ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt")
print(tok.decode(m.generate(ids, max_new_tokens=48, do_sample=False)[0, ids.shape[1]:], skip_special_tokens=True))
PY
done < "$prompts"
