#!/usr/bin/env bash
# Eager vs compiled predict latency of the full-size π0 / π0.5 / SmolVLA on one CUDA GPU (issue 24).
#
# One command, under 8 minutes on an H100: benchmarks/policy_latency.py --size full, bfloat16,
# random weights (see benchmarks/policy_builds.py), 1 camera with compile none / default /
# reduce-overhead for every family first, then eager with 2 and 3 cameras. The python run starts
# no new (family, cameras) group after DEADLINE_S seconds and is killed at LIMIT_S; the markdown
# table is rewritten after every group, so a cut run still leaves the rows it finished (the
# others say "not run").
#
# Usage (from anywhere):  OUT=/some/dir benchmarks/gpu_compile_latency.sh [extra policy_latency args]
#   env: OUT (default /tmp/gpu_compile_latency), PY (default .venv/bin/python, else python3),
#        DEADLINE_S (default 300), LIMIT_S (default 450)
# Writes: $OUT/policy_latency_gpu.md (the table), $OUT/policy_latency_gpu.log, $OUT/gpu.txt.
# Needs torch with CUDA, transformers, and this package importable (the repository root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
OUT="${OUT:-/tmp/gpu_compile_latency}"
PY="${PY:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
DEADLINE_S="${DEADLINE_S:-300}"
LIMIT_S="${LIMIT_S:-450}"
mkdir -p "$OUT"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_compile_latency: $PY has no CUDA torch (torch.cuda.is_available() is False)." \
         "Run it on a GPU machine, or use: $PY benchmarks/policy_latency.py --size full --dry-run" >&2
    exit 2
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda",
torch.version.cuda, "transformers", transformers.__version__)'; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
rc=0
timeout "$LIMIT_S" "$PY" benchmarks/policy_latency.py --size full --cameras 1 2 3 \
    --compile-cameras 1 --compile none default reduce-overhead \
    --samples-large 20 --warmup 3 --rounds 4 --threads 4 --deadline-s "$DEADLINE_S" \
    --out "$OUT/policy_latency_gpu.md" "$@" 2>&1 | tee "$OUT/policy_latency_gpu.log" \
    || rc=$?
echo "gpu_compile_latency: exit $rc; table in $OUT/policy_latency_gpu.md"
exit "$rc"
