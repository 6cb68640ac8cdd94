#!/usr/bin/env bash
# scalpel's CUDA build side by side with transformers + PyTorch on one GPU: capture (as probe runs it,
# and the same work as transformers) and batched greedy generation, in f32 and bf16, alternating,
# ROUNDS (default 2) of each; plus the first run's kernel-loading time with an empty and with a warm
# driver cache. Models: random weights of real shapes (made there with transformers' from_config),
# since real weights cannot be fetched on the GPU machine; random weights are fine for speed.
#
# Two steps, because the GPU machine has no Rust (see ../shared/gpu/README.md):
#   here:  scripts/bench-gpu.sh pack     builds the CUDA binaries (CUDA_BUILD, default
#                                        ../shared/gpu/build-cuda.sh, else cargo --features cuda) and
#                                        fills out/gpu-carry with them and the models' config and
#                                        tokenizer files (from models/, scripts/fetch-model.sh)
#   there: scripts/bench-gpu.sh run      with out/gpu-carry carried; prints a table last
#
# Environment (run): ROUNDS (2), BATCHES (capture batches of 16, default 64), GEN ("80 40 20":
# prompts, new tokens, batch), MODELS (folders under out/gpu-carry/models, default all), DTYPES ("f32 bf16"),
# DIAGNOSE (1: also the kernel-loading runs, the JIT times, an ncu kernel list and a probe; 0: only the
# comparison). transformers runs with PyTorch's cuDNN attention off (SCALPEL_CUDNN_SDPA=0, its faster
# setting here: cuDNN sets up a graph for each new sequence length); one run of its default is shown first;
# for a dry run on the CPU: DEVICE=cpu BIN_DIR=target/release PY=path/to/python-with-torch.
set -uo pipefail
cd "$(dirname "$0")/.."
carry=${CARRY:-out/gpu-carry}

pack() {
  set -e
  local build=${CUDA_BUILD:-../shared/gpu/build-cuda.sh}
  if [ -x "$build" ]; then
    # a CUDA build on a machine without a GPU or toolkit (NVIDIA's pip wheels; see that script)
    "$build" -- --example bench_forward --example bench_generate
  else
    CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda --bin scalpel \
      --example bench_forward --example bench_generate
  fi
  mkdir -p "$carry/bin" "$carry/models"
  for b in scalpel examples/bench_forward examples/bench_generate; do
    strip -o "$carry/bin/${b#examples/}" "target/cuda/release/$b"
    xz -T0 -6 -f "$carry/bin/${b#examples/}"
  done
  for m in qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct; do
    [ -d "models/$m" ] || scripts/fetch-model.sh "$m"
    mkdir -p "$carry/models/$m"
    for f in config.json generation_config.json tokenizer.json tokenizer_config.json; do
      [ -f "models/$m/$f" ] && cp "models/$m/$f" "$carry/models/$m/"
    done
  done
  # candle's kernel modules for the JIT timings; the decoder never loads conv or quantized (6 MB)
  local ptx
  ptx=$(ls -d target/cuda/release/build/candle-kernels-*/out | head -1)
  mkdir -p "$carry/ptx"
  for m in affine binary cast fill indexing reduce sort ternary unary; do cp "$ptx/$m.ptx" "$carry/ptx/"; done
  du -sh "$carry"
}

run() {
  local bin=/tmp/scalpel-bin work=/tmp/scalpel-models dev=${DEVICE:-cuda} py=${PY:-python3}
  mkdir -p "$bin" "$work"
  for b in scalpel bench_forward bench_generate; do
    if [ -n "${BIN_DIR:-}" ]; then
      cp "$BIN_DIR/$b" "$bin/$b" 2> /dev/null || cp "$BIN_DIR/examples/$b" "$bin/$b"
    else
      xz -dc "$carry/bin/$b.xz" > "$bin/$b" && chmod +x "$bin/$b"
    fi
  done
  export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
  export SCALPEL_DEVICE=$dev PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$bin/scalpel" --version
  local models=${MODELS:-$(ls "$carry/models")}
  for m in $models; do
    "$py" - "$carry/models/$m" "$work/$m" "$dev" << 'EOF'
import shutil, sys, torch
from transformers import AutoConfig, AutoModelForCausalLM
src, dst, device = sys.argv[1], sys.argv[2], sys.argv[3]
torch.manual_seed(0)
config = AutoConfig.from_pretrained(src)
with torch.device(device):
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.save_pretrained(dst)
for f in ["generation_config.json", "tokenizer.json", "tokenizer_config.json"]:
    try:
        shutil.copy(f"{src}/{f}", dst)
    except FileNotFoundError:
        pass
print(f"{dst}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, random")
EOF
  done
  local first
  first=$(ls "$work" | head -1)
  if [ "${DIAGNOSE:-1}" = 1 ]; then
    # Kernel loading: an empty driver cache (a machine's first run), then the same cache again.
    # The first batch's time shows the stall of compiling candle's PTX.
    export CUDA_CACHE_PATH=/tmp/cuda-jit-cache
    rm -rf "$CUDA_CACHE_PATH"
    echo "kernel loading, empty driver cache:"; "$bin/bench_forward" "$work/$first" 2 --device "$dev"
    echo "kernel loading, warm driver cache:"; "$bin/bench_forward" "$work/$first" 2 --device "$dev"
    if [ -d "$carry/ptx" ]; then
      CUDA_CACHE_DISABLE=1 "$py" scripts/cuda_jit_times.py "$carry/ptx"
    fi
  fi
  export SCALPEL_CUDNN_SDPA=0
  for dtype in ${DTYPES:-f32 bf16}; do
    echo "transformers' default attention (cuDNN on), $dtype:"
    SCALPEL_CUDNN_SDPA=1 SCALPEL_DTYPE=$dtype "$py" scripts/compare_transformers.py capture "$work/$first" "${BATCHES:-64}" 2> /dev/null | tail -1
  done
  local rounds=${ROUNDS:-2} batches=${BATCHES:-64} gen=${GEN:-80 40 20} table=""
  best() { sort -g | tail -1; }
  num() { grep -o "[0-9.]* $1" | head -1 | cut -d' ' -f1; }
  for m in $models; do
    for dtype in ${DTYPES:-f32 bf16}; do
      local sc=() sw=() tc=() sg=() tg=()
      for _ in $(seq 1 "$rounds"); do
        local line
        line=$("$bin/bench_forward" "$work/$m" "$batches" --device "$dev" --dtype "$dtype"); echo "$line"
        sc+=("$(num real <<< "$line")")
        line=$("$bin/bench_forward" "$work/$m" "$batches" --device "$dev" --dtype "$dtype" --no-shared-prefix); echo "$line"
        sw+=("$(num real <<< "$line")")
        line=$(SCALPEL_DTYPE=$dtype "$py" scripts/compare_transformers.py capture "$work/$m" "$batches" 2> /dev/null | tail -1); echo "$line"
        tc+=("$(num real <<< "$line")")
        # shellcheck disable=SC2086
        line=$("$bin/bench_generate" "$work/$m" $gen --device "$dev" --dtype "$dtype"); echo "$line"
        sg+=("$(num prompts/s <<< "$line")")
        # shellcheck disable=SC2086
        line=$(SCALPEL_DTYPE=$dtype "$py" scripts/compare_transformers.py generate "$work/$m" $gen 2> /dev/null | tail -1); echo "$line"
        tg+=("$(num prompts/s <<< "$line")")
      done
      local s1 s2 s3 t1 t2
      s1=$(printf '%s\n' "${sc[@]}" | best); s3=$(printf '%s\n' "${sw[@]}" | best); t1=$(printf '%s\n' "${tc[@]}" | best)
      s2=$(printf '%s\n' "${sg[@]}" | best); t2=$(printf '%s\n' "${tg[@]}" | best)
      table+=$(awk -v m="$m" -v d="$dtype" -v s1="$s1" -v s3="$s3" -v t1="$t1" -v s2="$s2" -v t2="$t2" 'BEGIN {
        printf "%s %s: capture %s vs %s real tok/s = %.2fx (same work %s = %.2fx); generate %s vs %s prompts/s = %.2fx\n",
          m, d, s1, t1, s1 / t1, s3, s3 / t1, s2, t2, s2 / t2 }')$'\n'
    done
  done
  if [ "${DIAGNOSE:-1}" = 1 ] && command -v ncu > /dev/null; then
    # Every kernel's GPU time for the first model's warm-up batch and one timed batch (bf16).
    timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
      "$bin/bench_forward" "$work/$first" 1 --device "$dev" --dtype bf16 > "${OUT:-/tmp}/ncu-scalpel.csv" 2> /dev/null
    SCALPEL_PROFILE=1 SCALPEL_DTYPE=bf16 "$py" scripts/compare_transformers.py capture "$work/$first" 1 \
      > "${OUT:-/tmp}/profile-transformers.txt" 2>&1
    echo "ncu: $(grep -c gpu__time_duration "${OUT:-/tmp}/ncu-scalpel.csv") kernel launches recorded"
  fi
  if [ "${DIAGNOSE:-1}" = 1 ]; then
    echo "probe end to end (f32, ${PROBE_LIMIT:-128} prompts a set, random weights):"
    local t0=$EPOCHREALTIME
    "$bin/scalpel" probe "$work/$first" --out /tmp/probe-out --limit "${PROBE_LIMIT:-128}" --device "$dev" --force 2>&1 | tail -3
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "probe: %.1f s wall\n", b - a }'
  fi
  echo "== scalpel / transformers, best of $rounds, $(nvidia-smi --query-gpu=name --format=csv,noheader) =="
  printf '%s' "$table"
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: scripts/bench-gpu.sh pack|run (see the comment at the top)" >&2; exit 2 ;;
esac
