#!/usr/bin/env bash
# Issue 18: everything a GPU session has to run, in one command that fits one device call (10 minutes) and
# the session's 15 minutes of device time with room for one rerun.
#
#   here, once, with network:  bash bench/gpu_wheels.sh           # .whl/: MONAI, Django, ... for Python 3.12
#   on the device machine:     run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=560)
#   anywhere, on the CPU:      bash bench/gpu_session.sh --quick --device cpu
#
# 1. installs the carried wheels (no network there) into /tmp/site on top of the image's CUDA torch;
# 2. runs `pytest -m gpu` and the pre-annotation tests with ML_DEVICE=$DEVICE (SQLite: no PostgreSQL there);
# 3. runs bench/bench_gpu.py (networks x fp32/bf16/fp16 with Dice, training patches/s, the platform's
#    pre-annotation against plain MONAI on the same scan and grid, the 14-label model's peak memory) and
#    bench/bench_label_memory.py (peak RSS at 3/14/100 labels against plain MONAI);
# 4. writes every figure and log under $OUT (at most 8 files come back): env.txt, pytest.txt, gpu.txt,
#    gpu.json, labelmem.txt, labelmem.json, session.txt.
# Each step has its own time limit, so one that hangs cannot take the others' time.
set -uo pipefail
QUICK=()
DEVICE=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=(--quick) ;;
        --device) DEVICE="$2"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
cd "$(dirname "$0")/.."
started=$(date +%s)
# Time limits per step are the GPU's; on a CPU (a smoke run on a shared machine) they are SCALE times longer.
SCALE="${SCALE:-1}"
[ "$DEVICE" = cpu ] && SCALE="${SCALE_CPU:-6}"
# Each step gets its own limit, cut to what is left of TOTAL seconds (the device call's 560 s, less a margin).
TOTAL="${TOTAL:-540}"
t() {
    local left=$((TOTAL * SCALE - ($(date +%s) - started)))
    local want=$(($1 * SCALE))
    [ $left -lt 10 ] && left=10
    echo $((want < left ? want : left))
}
OUT="${OUT:-bench/out/gpu-session}"
mkdir -p "$OUT"
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONUNBUFFERED=1 ML_DEVICE="$DEVICE"
log() { echo "[$(($(date +%s) - started)) s] $*" | tee -a "$OUT/session.txt"; }

# 1. install
if $PY -c "import django, monai, nibabel, pydicom, pytest_django" 2>/dev/null; then
    log "MONAI, Django and the platform's requirements are importable: nothing to install"
elif [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    log "installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl >>"$OUT/session.txt" 2>&1 || { log "wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD"
else
    log "MONAI or Django missing and no .whl/ carried (bash bench/gpu_wheels.sh here first)"; exit 1
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
    $PY - <<'EOF'
import importlib.metadata as md, sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
for name in ("monai", "django", "nibabel", "pydicom", "numpy", "scipy"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "MISSING")
print("pinned torch (requirements-worker.txt): 2.13.0; this run's:", torch.__version__)
EOF
} >"$OUT/env.txt" 2>&1
log "environment: $(tr '\n' ';' <"$OUT/env.txt" | cut -c1-300)"
if [ "$DEVICE" != cpu ] && ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    log "torch sees no CUDA device: stopping"; exit 1
fi

# 2. tests (SQLite in memory; the tests' own child processes get a file database where they need one)
export DATABASE_URL="sqlite:///$(mktemp -d)/tests.sqlite3" REQUIRE_SERVICES=0
log "pytest -m gpu, then the pre-annotation tests, on $DEVICE"
timeout $(t 90) $PY -m pytest tests/ml/test_gpu.py -m gpu -q -p no:cacheprovider -rs >"$OUT/pytest.txt" 2>&1
log "pytest -m gpu: exit $? ($(tail -1 "$OUT/pytest.txt"))"
timeout $(t 120) $PY -m pytest tests/ml/test_registry.py tests/ml/test_label_memory.py tests/ml/test_engine.py \
    -q -p no:cacheprovider -x >>"$OUT/pytest.txt" 2>&1
log "pre-annotation tests: exit $? ($(tail -1 "$OUT/pytest.txt"))"
unset DATABASE_URL

# 3. benchmarks
log "bench_gpu.py ${QUICK[*]} --device $DEVICE"
timeout $(t 240) $PY bench/bench_gpu.py "${QUICK[@]}" --device "$DEVICE" --out "$OUT/gpu.json" >"$OUT/gpu.txt" 2>&1
log "bench_gpu.py: exit $?"
if [ ${#QUICK[@]} -eq 0 ]; then LABELMEM=(--slices 300 --cap-gb 100); else LABELMEM=(--slices 20 --labels 3 14); fi
log "bench_label_memory.py ${LABELMEM[*]} --device $DEVICE"
timeout $(t 200) $PY bench/bench_label_memory.py "${LABELMEM[@]}" --device "$DEVICE" --json "$OUT/labelmem.json" \
    >"$OUT/labelmem.txt" 2>&1
log "bench_label_memory.py: exit $?"
log "done; files under $OUT: $(ls "$OUT" | tr '\n' ' ')"
