#!/usr/bin/env bash
# Layer-major probe on a model larger than what it may hold in memory.
#
# Builds a synthetic checkpoint in Qwen2.5-3B's shape (36 layers, hidden 2048, bf16, 4 shards,
# 6.2 GB; random weights, the demo model's tokenizer), then:
#   1. probes it with the layer-major path under `ulimit -d` (RLIMIT_DATA: caps the process's
#      anonymous memory, not its mapped file pages) of $LIMIT_GB GB, without --layer-major: the
#      probe has to choose layer-major itself and complete;
#   2. probes a 4-layer checkpoint of the same shape (1.2 GB) with both paths, compares their
#      directions, and reports both peaks (the whole path on the 6.2 GB checkpoint would need
#      ~12.4 GB of f32 weights; BENCH_WHOLE_BIG=1 measures it too).
# For each run: wall time, bytes of weights read (scalpel's count, and read_bytes from
# /proc/PID/io: what came from the disk rather than the page cache), the peak anonymous RSS
# (RssAnon sampled every 50 ms from /proc/PID/status: heap, the converted f32 weights,
# activations) and the peak total RSS (/usr/bin/time's "maximum resident set size", which also
# counts mapped checkpoint pages; those are page cache the kernel can drop at any time).
#
# Usage: scripts/bench-large.sh [--keep]   (env: PROMPTS=32 per set, LIMIT_GB=2, DIR=out/bench-large)
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=0
[[ "${1:-}" == "--keep" ]] && KEEP=1
PROMPTS=${PROMPTS:-32}
LIMIT_GB=${LIMIT_GB:-2}
DIR=${DIR:-out/bench-large}
TOKENIZER=${TOKENIZER:-models/qwen2.5-coder-0.5b-instruct}
SHAPE=(--family qwen2 --hidden 2048 --intermediate 11008 --heads 16 --kv-heads 2 --vocab 151936 --tie 1)

[[ -f "$TOKENIZER/tokenizer.json" ]] || { echo "needs a Qwen2.5 tokenizer in $TOKENIZER (scripts/fetch-demo-model.sh)" >&2; exit 1; }
mkdir -p "$DIR"
free_gb=$(df -BG --output=avail "$DIR" | tail -1 | tr -dc '0-9')
(( free_gb >= 10 )) || { echo "needs 10 GB free in $DIR, has ${free_gb} GB" >&2; exit 1; }

echo "== build"
CARGO_INCREMENTAL=1 cargo build --release --quiet --bin scalpel --example synthetic_checkpoint
BIN=target/release/scalpel
GEN=target/release/examples/synthetic_checkpoint
cleanup() { (( KEEP )) || rm -rf "$DIR/big" "$DIR/small"; }
trap cleanup EXIT

echo "== synthetic checkpoints (load: $(cut -d' ' -f1-3 /proc/loadavg))"
t0=$(date +%s)
[[ -f "$DIR/big/config.json" ]] || "$GEN" "$DIR/big" "${SHAPE[@]}" --layers 36 --shards 4 --tokenizer-from "$TOKENIZER"
[[ -f "$DIR/small/config.json" ]] || "$GEN" "$DIR/small" "${SHAPE[@]}" --layers 4 --shards 2 --tokenizer-from "$TOKENIZER"
echo "written in $(( $(date +%s) - t0 )) s; big: $(du -sh "$DIR/big" | cut -f1), small: $(du -sh "$DIR/small" | cut -f1)"

# measure NAME LIMIT_KB ARGS...: run scalpel ARGS (under `ulimit -d LIMIT_KB` unless 0), print a line.
measure() {
    local name=$1 limit=$2; shift 2
    local log="$DIR/$name.log" timef="$DIR/$name.time"
    (
        [[ "$limit" != 0 ]] && ulimit -d "$limit"
        exec /usr/bin/time -f "%e %M" -o "$timef" "$BIN" "$@"
    ) >"$log" 2>&1 &
    local outer=$! pid="" anon=0 read=0
    while kill -0 "$outer" 2>/dev/null; do
        [[ -z "$pid" ]] && pid=$(pgrep -P "$outer" -x scalpel 2>/dev/null || true)
        if [[ -n "$pid" && -r /proc/$pid/status ]]; then
            local a r
            a=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            r=$(awk '/^read_bytes:/ {print $2}' "/proc/$pid/io" 2>/dev/null || echo 0)
            (( ${a:-0} > anon )) && anon=$a
            (( ${r:-0} > read )) && read=$r
        fi
        sleep 0.05
    done
    if ! wait "$outer"; then
        echo "$name FAILED:"; tail -5 "$log"; return 1
    fi
    read -r secs maxrss <"$timef"
    local path weights
    path=$(grep -o 'capture path: [a-z -]*' "$log" | head -1 | sed 's/capture path: //')
    weights=$(grep -o 'read [0-9.]* [kMG]B of weights' "$log" | sed 's/read //; s/ of weights//' || true)
    awk -v n="$name" -v p="$path" -v s="$secs" -v w="${weights:-all}" -v r="$read" -v a="$anon" -v m="$maxrss" 'BEGIN {
        printf "%-18s %-22s %6.1f s  weights read %-7s disk read %5.2f GB  peak RssAnon %5.2f GB  peak RSS incl. mapped file (time) %5.2f GB\n",
            n, p, s, w, r / 1e9, a * 1024 / 1e9, m * 1024 / 1e9 }'
    grep -m1 'capture path' "$log" | sed 's/^/    /'
}

SET=(--limit "$PROMPTS" --positions -1 --force)
echo "== probe, $PROMPTS + $PROMPTS prompts (load: $(cut -d' ' -f1-3 /proc/loadavg))"
measure big-auto-limited $(( LIMIT_GB * 1000000 )) probe "$DIR/big" --out "$DIR/probe-big" "${SET[@]}"
measure small-layer-major 0 probe "$DIR/small" --out "$DIR/probe-small-lm" --layer-major "${SET[@]}"
measure small-whole 0 probe "$DIR/small" --out "$DIR/probe-small-whole" --no-layer-major "${SET[@]}"
if [[ "${BENCH_WHOLE_BIG:-0}" == 1 ]]; then
    measure big-whole 0 probe "$DIR/big" --out "$DIR/probe-big-whole" --no-layer-major "${SET[@]}"
fi
echo "== directions, layer-major vs whole model (small checkpoint)"
python3 - "$DIR/probe-small-lm/directions.safetensors" "$DIR/probe-small-whole/directions.safetensors" <<'EOF'
import json, struct, sys
def load(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    out = {}
    for k, v in header.items():
        if k != '__metadata__':
            s, e = v['data_offsets']
            out[k] = struct.unpack('<%df' % ((e - s) // 4), data[s:e])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), "different entries"
worst = max(max(abs(x - y) for x, y in zip(a[k], b[k])) / max(max(abs(y) for y in b[k]), 1e-30) for k in a)
print(f"{len(a)} directions, max relative difference {worst:.2e}:", "equal" if worst <= 1e-5 else "DIFFERENT")
sys.exit(0 if worst <= 1e-5 else 1)
EOF
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
