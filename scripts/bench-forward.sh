#!/usr/bin/env bash
# Benchmark: real (non-pad) tokens/s of activation capture (batches of 16 ~64-token prompts,
# length-bucketed as `probe` batches them; every layer's resid_pre/mid/post at the last token)
# on the demo model, with peak RSS. Extra arguments go to the example (--file-order, --dtype).
#   scripts/bench-forward.sh [MODEL_DIR] [BATCHES] [--file-order] [--dtype f32|bf16]
# scripts/bench-vs-transformers.sh runs this side by side with Python transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/smollm2-135m-instruct}
batches=${2:-8}
shift $(($# > 2 ? 2 : $#))
cargo build --release --quiet --example bench_forward
/usr/bin/time -f "peak RSS %M KB" target/release/examples/bench_forward "$model" "$batches" "$@"
