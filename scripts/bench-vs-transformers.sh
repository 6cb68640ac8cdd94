#!/usr/bin/env bash
# Side-by-side benchmark of scalpel and Python transformers + PyTorch on the same model, prompts,
# batch and thread count, alternating runs (ROUNDS of each, default 2):
#   capture:  BATCHES (default 8) batches of 16 ~64-token chat prompts, every layer's residual
#             stream at the last token (examples/bench_forward.rs vs compare_transformers.py);
#             real (non-pad) tokens/s. scalpel batches by length and runs each batch's
#             shared chat-template prefix once, as `probe` does; it is also timed without
#             the shared prefix (the same work as transformers); transformers takes the file order.
#   generate: 40 prompts x up to 40 new tokens, greedy, batch 20, KV cache
#             (examples/bench_generate.rs vs model.generate); prompts/s.
# Prints each run, the best of each side, and the ratio scalpel / transformers.
#
#   scripts/bench-vs-transformers.sh [MODEL_DIR] [--install]
#
# transformers runs from the venv VENV (default .venv-bench); --install creates it and installs
# torch and transformers there with pip. Without torch, only scalpel's numbers are printed.
# SCALPEL_THREADS (default 2) sets the thread count of both sides; SCALPEL_DTYPE f32 (default).
set -euo pipefail
cd "$(dirname "$0")/.."
model=models/smollm2-135m-instruct
install=no
for a in "$@"; do
  case "$a" in
    --install) install=yes ;;
    *) model=$a ;;
  esac
done
venv=${VENV:-.venv-bench}
rounds=${ROUNDS:-2}
batches=${BATCHES:-8}
threads=${SCALPEL_THREADS:-2}
dtype=${SCALPEL_DTYPE:-f32}
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads SCALPEL_THREADS=$threads SCALPEL_DTYPE=$dtype

if [ "$install" = yes ] && ! "$venv/bin/python" -c 'import torch, transformers' 2> /dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch transformers
fi
python=""
if "$venv/bin/python" -c 'import torch, transformers' 2> /dev/null; then
  python=$venv/bin/python
fi

cargo build --release --quiet --example bench_forward --example bench_generate
echo "model $model, $threads threads, $dtype, $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
best() { sort -g | tail -1; }
sc=() sw=() tc=() sg=() tg=()
for r in $(seq 1 "$rounds"); do
  line=$(target/release/examples/bench_forward "$model" "$batches" --dtype "$dtype"); echo "$line"
  sc+=("$(grep -o '[0-9.]* real' <<< "$line" | cut -d' ' -f1)")
  line=$(target/release/examples/bench_forward "$model" "$batches" --dtype "$dtype" --no-shared-prefix); echo "$line"
  sw+=("$(grep -o '[0-9.]* real' <<< "$line" | cut -d' ' -f1)")
  if [ -n "$python" ]; then
    line=$("$python" scripts/compare_transformers.py capture "$model" "$batches" 2> /dev/null | tail -1); echo "$line"
    tc+=("$(grep -o '[0-9.]* real' <<< "$line" | cut -d' ' -f1)")
  fi
  line=$(target/release/examples/bench_generate "$model" 40 40 20 --dtype "$dtype"); echo "$line"
  sg+=("$(grep -o '[0-9.]* prompts/s' <<< "$line" | cut -d' ' -f1)")
  if [ -n "$python" ]; then
    line=$("$python" scripts/compare_transformers.py generate "$model" 40 40 20 2> /dev/null | tail -1); echo "$line"
    tg+=("$(grep -o '[0-9.]* prompts/s' <<< "$line" | cut -d' ' -f1)")
  fi
done
s1=$(printf '%s\n' "${sc[@]}" | best); s2=$(printf '%s\n' "${sg[@]}" | best); s3=$(printf '%s\n' "${sw[@]}" | best)
echo "scalpel best: capture $s1 real tokens/s (runs: ${sc[*]}; without the shared prefix $s3: ${sw[*]}), generate $s2 prompts/s (runs: ${sg[*]})"
if [ -z "$python" ]; then
  echo "transformers not found in $venv: rerun with --install (creates $venv with pip install torch transformers)"
  echo "or point VENV at a venv that has them, to get the side-by-side ratios."
  exit 0
fi
t1=$(printf '%s\n' "${tc[@]}" | best); t2=$(printf '%s\n' "${tg[@]}" | best)
echo "transformers best: capture $t1 real tokens/s (runs: ${tc[*]}), generate $t2 prompts/s (runs: ${tg[*]})"
awk -v s1="$s1" -v s3="$s3" -v t1="$t1" -v s2="$s2" -v t2="$t2" \
  'BEGIN { printf "ratio scalpel/transformers: capture %.2fx as probe runs it (%.2fx without the shared prefix), generate %.2fx\n", s1 / t1, s3 / t1, s2 / t2 }'
