#!/usr/bin/env bash
# Benchmark: tokens/s of activation capture (batch 16, ~64-token prompts, every layer's
# resid_pre/mid/post at the last token) on the demo model, with peak RSS.
#   scripts/bench-forward.sh [MODEL_DIR] [BATCHES]
# scripts/compare_transformers.py runs the same capture with Python transformers, for those
# who have torch installed.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/smollm2-135m-instruct}
cargo build --release --quiet --example bench_forward
/usr/bin/time -f "peak RSS %M KB" target/release/examples/bench_forward "$model" "${2:-8}"
