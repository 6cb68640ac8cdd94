#!/usr/bin/env bash
# Time per trial of `scalpel search` on the demo model (Qwen2.5-Coder-0.5B-Instruct):
# a probe (cached in out/bench-search/probe), then a fresh search of TRIALS trials (default 6)
# with the recipe's settings (80 + 120 validation prompts, 40 harmless answered, 8-token
# answers, batch 40), and the seconds each trial took (baseline measurement excluded).
#   scripts/bench-search.sh [TRIALS] [extra scalpel search flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-6}
shift || true
cargo build --release --quiet --bin scalpel
scripts/fetch-demo-model.sh > /dev/null
model=models/qwen2.5-coder-0.5b-instruct
out=out/bench-search
if [ ! -f "$out/probe/directions.safetensors" ]; then
  target/release/scalpel probe "$model" --out "$out/probe" --projected --limit 64
fi
rm -rf "$out/search"
start=$(date +%s.%N)
/usr/bin/time -f "search: %e s wall, peak RSS %M KB" target/release/scalpel search "$model" \
  --directions "$out/probe/directions.safetensors" --out "$out/search" --trials "$trials" \
  --max-tokens 8 --batch 40 --answered-harmless 40 "$@" > /dev/null
end=$(date +%s.%N)
python3 - "$out/search/trials.jsonl" "$start" "$end" <<'PY'
import json, sys
trials = [json.loads(l) for l in open(sys.argv[1])]
secs = [t["scores"]["seconds"] for t in trials]
print(f"{len(trials)} trials: {sum(secs)/len(secs):.1f} s per trial (min {min(secs):.1f}, max {max(secs):.1f}); "
      f"whole run {float(sys.argv[3]) - float(sys.argv[2]):.0f} s including model load and the baseline measurement")
PY
