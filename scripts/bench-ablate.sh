#!/usr/bin/env bash
# Benchmark: edit a synthetic checkpoint of >= 1 GiB and compare with a plain `cp` of the same files.
# Prints seconds, GB/s and peak anonymous RSS (sampled from /proc) for each, and cp followed by sync
# (scalpel syncs what it writes).
#   scripts/bench-ablate.sh [WORKDIR]        (default: a temp folder, removed afterwards)
# Environment: HIDDEN, LAYERS, INTERMEDIATE, VOCAB, DTYPE (bf16), SHARDS (2) size the checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
cleanup() { [ -z "${1:-}" ] && rm -rf "$work"; }
trap 'cleanup "${1:-}"' EXIT
cargo build --release --quiet --bin scalpel --example synthetic_checkpoint
bin=target/release/scalpel
src="$work/synthetic"
if [ ! -f "$src/config.json" ]; then
  target/release/examples/synthetic_checkpoint "$src" --hidden "${HIDDEN:-2048}" --layers "${LAYERS:-12}" \
    --intermediate "${INTERMEDIATE:-5632}" --vocab "${VOCAB:-32000}" --dtype "${DTYPE:-bf16}" --shards "${SHARDS:-2}"
fi
bytes=$(du -sb "$src" | cut -f1)
python3 - "$src" "$work/dirs.safetensors" <<'PY'
import json, struct, sys, random, math
cfg = json.load(open(sys.argv[1] + "/config.json"))
h = cfg["hidden_size"]; random.seed(0)
v = [random.gauss(0, 1) for _ in range(h)]; n = math.sqrt(sum(x * x for x in v)); v = [x / n for x in v]
data = struct.pack(f"<{h}f", *v)
header = json.dumps({"__metadata__": {"format": "scalpel-directions", "recommended_layer": "0", "recommended_stream": "resid_pre"},
                     "resid_pre.0": {"dtype": "F32", "shape": [h], "data_offsets": [0, len(data)]}}).encode()
header += b" " * (-len(header) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(header)) + header + data)
PY
# peak_anon PID: highest RssAnon (kB) seen while PID runs.
peak_anon() { local pid=$1 peak=0 v; while kill -0 "$pid" 2>/dev/null; do
  v=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0); [ "${v:-0}" -gt "$peak" ] && peak=$v; sleep 0.05; done; echo "$peak"; }
run() { # run LABEL CMD...
  local label=$1; shift; local t0 t1 pid peak
  t0=$(date +%s.%N); "$@" & pid=$!; peak=$(peak_anon $pid); wait $pid; t1=$(date +%s.%N)
  python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'{sys.argv[3]:<8} {s:7.2f} s  {int(sys.argv[4])/s/1e9:6.2f} GB/s  peak anon RSS {int(sys.argv[5])/1024:7.1f} MiB')" "$t0" "$t1" "$label" "$bytes" "$peak"
}
echo "checkpoint: $(python3 -c "print(f'{$bytes/2**30:.2f}')") GiB in $src"
cat "$src"/*.safetensors > /dev/null   # warm the page cache so both runs read from memory
# Each run starts with no dirty pages (sync), so none pays for another's writeback. scalpel syncs
# its output before renaming it into place; plain cp does not, so cp+sync is the like-for-like time.
rm -rf "$work/copy" "$work/edited"; sync
run cp cp -r "$src" "$work/copy"
rm -rf "$work/copy"; sync
run cp+sync sh -c 'cp -r "$1" "$2" && sync' sh "$src" "$work/copy"
rm -rf "$work/copy"; sync
run ablate "$bin" ablate "$src" --directions "$work/dirs.safetensors" --out "$work/edited" --no-verify
rm -rf "$work/edited"
largest=$(python3 -c "
import json,glob,struct
m=0
for f in glob.glob('$src/*.safetensors'):
    b=open(f,'rb'); n=struct.unpack('<Q',b.read(8))[0]; h=json.loads(b.read(n))
    m=max([m]+[v['data_offsets'][1]-v['data_offsets'][0] for k,v in h.items() if k!='__metadata__'])
print(f'{m/2**20:.1f}')")
echo "largest tensor: $largest MiB (peak anonymous RSS should be a small multiple of it, not of the model)"
