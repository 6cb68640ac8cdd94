#!/usr/bin/env bash
# Stage 1 of `scalpel search` on the demo model (Qwen2.5-Coder-0.5B-Instruct), with and without
# pruning, same seed: seconds per trial (pruned and complete), the share pruned, the best
# validation KL at the target after each N of TRIALS, and the wall time of each search.
# A probe is made once (cached in $WORK/probe); each search is run once to the largest N, and
# "after N trials" reads its first N trials (the sampler's trial n depends only on the trials
# before it, so they are what an N-trial search runs). Stage 2 is off (--finalists 0) unless
# FINALISTS is set; its time is then printed too.
#   scripts/bench-search.sh [TRIALS...]            (default: 60 120 200)
# Environment: MODEL (model folder), WORK (output folder, default out/bench-search),
# SEED (default 0), FINALISTS (default 0), EXTRA (more `scalpel search` flags).
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(60 120 200)
max=$(printf '%s\n' "${counts[@]}" | sort -n | tail -1)
model=${MODEL:-models/qwen2.5-coder-0.5b-instruct}
work=${WORK:-out/bench-search}
seed=${SEED:-0}
finalists=${FINALISTS:-0}
cargo build --release --quiet --all-targets
[ -d "$model" ] || scripts/fetch-demo-model.sh > /dev/null
if [ ! -f "$work/probe/directions.safetensors" ]; then
  target/release/scalpel probe "$model" --out "$work/probe" --projected --limit 64
fi
for mode in prune no-prune; do
  flags=()
  [ "$mode" = no-prune ] && flags+=(--no-prune)
  rm -rf "$work/search-$mode"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  target/release/scalpel search "$model" --directions "$work/probe/directions.safetensors" \
    --out "$work/search-$mode" --trials "$max" --seed "$seed" --finalists "$finalists" \
    --max-tokens 8 --batch 40 --answered-harmless 40 "${flags[@]}" ${EXTRA:-} > /dev/null 2> "$work/search-$mode.log"
  end=$(date +%s.%N)
  python3 -c "print($end - $start)" > "$work/search-$mode.wall"
done
python3 - "$work" "${counts[@]}" <<'PY'
import json, math, sys
work, counts = sys.argv[1], [int(c) for c in sys.argv[2:]]

def bound(r, n, z=0.8416):
    if n == 0:
        return 1.0
    p = r / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min((centre + spread) / (1 + z * z / n), 1.0)

for mode in ["prune", "no-prune"]:
    d = f"{work}/search-{mode}"
    lines = [json.loads(l) for l in open(f"{d}/trials.jsonl")]
    trials = [l for l in lines if l.get("stage") != 2]
    finals = [l for l in lines if l.get("stage") == 2]
    record = json.load(open(f"{d}/search.json"))
    base, target = record["baseline"], record["settings"]["target_refusal_rate"]
    wall = float(open(f"{d}.wall").read())
    for n in counts:
        head = trials[:n]
        pruned = [t["scores"]["seconds"] for t in head if t.get("pruned")]
        complete = [t for t in head if not t.get("pruned")]
        secs = [t["scores"]["seconds"] for t in complete]
        at = [t for t in complete
              if t["scores"]["over_refusals"] <= base["over_refusals"]
              and bound(t["scores"]["refusals"], t["scores"]["harmful"]) <= target + 1e-12]
        best = min(at, key=lambda t: t["scores"]["kl_mean"]) if at else None
        stage1 = sum(t["scores"]["seconds"] for t in head)
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
        best_text = (f"best KL at target {best['scores']['kl_mean']:.4f} (trial {best['number']}, "
                     f"{best['scores']['refusals']}/{best['scores']['harmful']} refusals)") if best else "none at target"
        print(f"{mode:8} N={len(head):3}: {mean(secs):.1f} s per complete trial, {mean(pruned):.1f} s per pruned, "
              f"{100 * len(pruned) / max(len(head), 1):.0f} % pruned; {best_text}; stage 1 {stage1 / 60:.1f} min")
    s2 = sum(f["seconds"] for f in finals)
    print(f"{mode:8} whole search ({len(trials)} trials{', stage 2 ' + format(s2 / 60, '.1f') + ' min' if finals else ''}): "
          f"{wall / 60:.1f} min wall, model load and baseline included")
PY
