#!/usr/bin/env bash
# Check that every `scalpel fixture` family is a model folder transformers loads and runs as scalpel
# does: the same prompt token ids (raw and through the chat template), first-step logits within a
# tolerance, and scalpel's greedy tokens (a raw prompt, f32) each at transformers' top logit for
# the same prefix. Prints a markdown table; exits nonzero if a family transformers implements
# fails. See scripts/check_fixtures.py for what is compared.
#
# Usage: scripts/check-fixtures-with-transformers.sh [FAMILY ...]
#   FAMILY: only these (default: every family `scalpel fixture --help` names).
# Environment:
#   SCALPEL  the scalpel binary (default target/release/scalpel)
#   PYTHON   a python with torch and transformers (default python3)
#   TOKENS   greedy tokens (default 10); TOL the logit tolerance (default 1e-4)
#   FIXTURE_ARGS  more `scalpel fixture` flags for every family, e.g. "--untied --biases"
#   KEEP     keep the fixtures in this folder instead of a temporary one
# Every process runs under `nice -n ${NICE:-15}`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
scalpel=${SCALPEL:-$root/target/release/scalpel}
python=${PYTHON:-python3}
[ -x "$scalpel" ] || { echo "no scalpel binary at $scalpel (cargo build --release, or set SCALPEL)" >&2; exit 2; }
if [ -n "${KEEP:-}" ]; then
  work=$KEEP
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
families=()
for f in "$@"; do families+=(--family "$f"); done
nice -n "${NICE:-15}" "$python" "$here/check_fixtures.py" --scalpel "$scalpel" --work "$work" \
  --tokens "${TOKENS:-10}" --tol "${TOL:-1e-4}" \
  --fixture-args="${FIXTURE_ARGS:-}" "${families[@]}"
