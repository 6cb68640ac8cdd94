#!/usr/bin/env bash
# Load scalpel's GGUF exports in llama.cpp (llama-cpp-python) and in transformers (gguf_file=),
# print their greedy answers beside scalpel's on the safetensors edit, and measure each GGUF's
# first-token KL against the folder it was exported from (transformers float32 logits of that
# folder; the same token ids everywhere; softmax over the full vocabulary).
#
# Usage: scripts/check-gguf.sh EDITED_DIR OUT_DIR [N]
#   EDITED_DIR: a folder `scalpel ablate` wrote; OUT_DIR: where the GGUFs, answers and
#   results.json go. N: prompts per set (default 10) from the held-out test split,
#   recipes/prompts/harmful_test.txt and harmless_test.txt (the first N lines of each).
# Environment:
#   SCALPEL      the scalpel binary (default target/release/scalpel)
#   PY           a python with llama-cpp-python, torch, transformers, gguf (default: a venv made
#                in OUT_DIR/venv; llama-cpp-python is built from source there)
#   BASE         the unedited folder: also exported to q4_k_m and measured against itself, so the
#                format's own cost is told apart from the edit's
#   SOURCE_GGUF  the GGUF that BASE (and so the edit) was imported from: also `--type same
#                --source-gguf`, its untouched tensors checked byte for byte against the source,
#                and the same file with the edited tensors as q8_0 instead of their source type
#   MAX_TOKENS   answer length (default 64); HF_GENERATE=1 also generates in transformers
#   THREADS      llama.cpp threads (default 1)
# Every process runs under `nice -n ${NICE:-15}`.
set -euo pipefail
edited=${1:?usage: check-gguf.sh EDITED_DIR OUT_DIR [N]}
out=${2:?usage: check-gguf.sh EDITED_DIR OUT_DIR [N]}
n=${3:-10}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
scalpel=${SCALPEL:-$root/target/release/scalpel}
max_tokens=${MAX_TOKENS:-64}
nice="nice -n ${NICE:-15}"
mkdir -p "$out"

py=${PY:-}
if [ -z "$py" ]; then
  py="$out/venv/bin/python"
  if [ ! -x "$py" ]; then
    python3 -m venv "$out/venv"
    $nice "$out/venv/bin/pip" install --quiet torch transformers gguf numpy
    CMAKE_ARGS="-DGGML_NATIVE=ON" $nice "$out/venv/bin/pip" install --quiet llama-cpp-python
  fi
fi

export_gguf() { # MODEL OUT TYPE [extra flags]
  local model=$1 file=$2 ty=$3
  shift 3
  [ -f "$file" ] || $nice "$scalpel" export "$model" --gguf "$file" --type "$ty" --no-modelfile "$@"
}

pairs=()
export_gguf "$edited" "$out/edit-bf16.gguf" same
pairs+=(--pair edit-bf16 "$out/edit-bf16.gguf" "$edited")
for ty in q8_0 q4_k_m; do
  export_gguf "$edited" "$out/edit-$ty.gguf" "$ty"
  pairs+=(--pair "edit-$ty" "$out/edit-$ty.gguf" "$edited")
done
if [ -n "${BASE:-}" ]; then
  export_gguf "$BASE" "$out/base-q4_k_m.gguf" q4_k_m
  pairs+=(--pair base-q4_k_m "$out/base-q4_k_m.gguf" "$BASE")
fi
if [ -n "${SOURCE_GGUF:-}" ]; then
  [ -n "${BASE:-}" ] && pairs+=(--pair base-source "$SOURCE_GGUF" "$BASE")
  export_gguf "$edited" "$out/edit-same.gguf" same --source-gguf "$SOURCE_GGUF"
  echo "== --type same: tensors against the source"
  $nice "$py" "$here/gguf_same.py" compare "$SOURCE_GGUF" "$out/edit-same.gguf" | tee "$out/same-compare.txt"
  [ -f "$out/edit-same-q8.gguf" ] ||
    $nice "$py" "$here/gguf_same.py" requant "$out/edit-same.gguf" "$edited" q8_0 "$out/edit-same-q8.gguf" \
      --source "$SOURCE_GGUF"
  pairs+=(--pair edit-same "$out/edit-same.gguf" "$edited" --pair edit-same-q8 "$out/edit-same-q8.gguf" "$edited")
fi

prompts="$out/prompts.txt"
{ head -n "$n" "$root/recipes/prompts/harmful_test.txt"; head -n "$n" "$root/recipes/prompts/harmless_test.txt"; } > "$prompts"

# scalpel's own greedy answers on the safetensors edit.
if [ ! -s "$out/scalpel.jsonl" ]; then
  : > "$out/scalpel.jsonl.partial"
  while IFS= read -r p; do
    a=$($nice "$scalpel" --quiet generate "$edited" --max-tokens "$max_tokens" --prompt "$p" 2>/dev/null || echo "(generate failed)")
    "$py" -c 'import json,sys; print(json.dumps({"prompt": sys.argv[1], "answer": sys.argv[2]}, ensure_ascii=False))' "$p" "$a" \
      >> "$out/scalpel.jsonl.partial"
  done < "$prompts"
  mv "$out/scalpel.jsonl.partial" "$out/scalpel.jsonl"
fi

hf=()
for label in ${HF_GGUF:-edit-q8_0 edit-q4_k_m}; do hf+=(--hf-gguf "$label"); done
[ "${HF_GENERATE:-0}" = 1 ] && hf+=(--hf-generate)
$nice "$py" "$here/check_gguf.py" --prompts "$prompts" "${pairs[@]}" "${hf[@]}" --max-tokens "$max_tokens" \
  --json "$out/results.json" --scalpel "$out/scalpel.jsonl"
