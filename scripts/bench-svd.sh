#!/usr/bin/env bash
# Benchmark: the full SVD analysis (all layers, attention and MLP writers, k = 32) of a model,
# printing seconds and peak RSS.   scripts/bench-svd.sh [MODEL_DIR] (default: the demo model)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/qwen2.5-coder-0.5b-instruct}
cargo build --release --quiet --bin scalpel
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
/usr/bin/time -f "svd: %e s wall, peak RSS %M KB" target/release/scalpel svd "$model" --out "$out/svd" --top-k 32 --targets attn,mlp
