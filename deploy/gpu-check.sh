#!/usr/bin/env bash
# The GPU check, in one command, for a host with an NVIDIA GPU: the `gpu`-marked tests and the
# engine and service benchmarks on the GPU, written down with the card they ran on.
#
#   make gpu-check [GPU_CHECK_ARGS=--record]      (or deploy/gpu-check.sh [--record] [--no-install])
#
#   --record      also append the summary to docs/benchmarks.md (then commit that file)
#   --no-install  do not pip install '.[cuda]' (jax[cuda12]) into the venv when JAX sees no GPU
#
# Without a GPU it refuses (exit 3) before it installs or runs anything: no nvidia-smi, or
# nvidia-smi lists no GPU; and, after the install, when JAX still sees no GPU. A skipped `gpu`
# test counts as a failure here (on this host it means the GPU was not used).
#
# Needs: the NVIDIA driver (nvidia-smi), make and python3.11 (for .venv, as `make test`), and
# wrk for the service benchmark (Debian: apt-get install wrk; installed here when root).
# Writes var/gpu-check/<UTC time>/: card.txt, pytest.txt, pytest.xml, engine.json, service.json,
# service.txt and summary.md (the card, the versions, the test counts and the figures).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RECORD=0
INSTALL=1
for arg in "$@"; do
    case $arg in
        --record) RECORD=1 ;;
        --no-install) INSTALL=0 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done
VENV=${VENV:-.venv}
PY=$VENV/bin/python

refuse() {
    echo "gpu-check: $*" >&2
    echo "gpu-check: nothing was run (this check needs an NVIDIA GPU; on a CPU-only host, 'make test' is the check)" >&2
    exit 3
}
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# -- 1. a GPU, before anything is installed or run -----------------------------------------------
command -v nvidia-smi >/dev/null || refuse "no nvidia-smi on PATH: no NVIDIA driver on this host"
CARDS=$(nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1) \
    || refuse "nvidia-smi failed: $CARDS"
[ -n "$CARDS" ] || refuse "nvidia-smi lists no GPU"
log "GPU(s): $CARDS"

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing wrk (the service benchmark's load generator)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk >/dev/null; }
    else
        echo "gpu-check: wrk is not on PATH (apt-get install wrk): the service benchmark needs it" >&2
        exit 2
    fi
fi

# -- 2. the venv, with JAX's CUDA wheels ---------------------------------------------------------
make --no-print-directory venv VENV="$VENV"
probe() { "$PY" -c 'import jax; gpus = jax.devices("gpu"); print(len(gpus), gpus[0].device_kind)' 2>&1 | tail -1; }
if ! seen=$(probe); then
    [ "$INSTALL" = 1 ] || refuse "JAX in $VENV sees no GPU ($seen); pip install -e '.[cuda]' was not run (--no-install)"
    log "JAX sees no GPU yet ($seen): pip install -e '.[cuda]' (jax[cuda12] and its CUDA wheels)"
    "$VENV/bin/pip" install -q -e '.[cuda]'
    seen=$(probe) || refuse "JAX in $VENV sees no GPU after installing '.[cuda]': $seen"
fi
log "JAX sees $seen"

OUT=var/gpu-check/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
{
    echo "date: $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "host: $(uname -srm), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))"
    echo "nvidia-smi: index, name, memory, driver, compute capability"
    while IFS= read -r card; do echo "  $card"; done <<<"$CARDS"
    echo "CUDA (driver): $(nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | head -1 | cut -d' ' -f3)"
    "$PY" - <<'EOF'
import importlib.metadata as m
import jax
for name in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "nvidia-cudnn-cu12"):
    try:
        print(f"{name}: {m.version(name)}")
    except m.PackageNotFoundError:
        print(f"{name}: not installed")
print("jax.devices():", ", ".join(f"{d} ({d.device_kind})" for d in jax.devices()))
EOF
} >"$OUT/card.txt"
cat "$OUT/card.txt"
STATUS=0

# -- 3. the gpu-marked tests ---------------------------------------------------------------------
log "pytest -m gpu"
"$PY" -m pytest -q -m gpu -rA --junitxml="$OUT/pytest.xml" >"$OUT/pytest.txt" 2>&1 || STATUS=1
tail -5 "$OUT/pytest.txt"
COUNTS=$("$PY" - "$OUT/pytest.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
print(f"{n['tests'] - n['failures'] - n['errors'] - n['skipped']} passed, {n['failures']} failed, "
      f"{n['errors']} errors, {n['skipped']} skipped (of {n['tests']})")
sys.exit(0 if n["tests"] and not (n["failures"] or n["errors"] or n["skipped"]) else 1)
EOF
) || STATUS=1
log "gpu tests: $COUNTS"

# -- 4. the benchmarks ---------------------------------------------------------------------------
log "benchmarks/bench_engine.py (engine vs hand-written jax.jit, on the GPU)"
"$PY" benchmarks/bench_engine.py --json >"$OUT/engine.json" || STATUS=1
ENGINE_MD=$("$PY" - "$OUT/engine.json" <<'EOF' || echo "(no engine figures: see $OUT/engine.json)"
import json, sys
sys.path.insert(0, "benchmarks")
import bench_engine
results = json.load(open(sys.argv[1]))
print(f"jax {results['jax']} on {results['device']}")
print()
print(bench_engine.markdown(results))
EOF
)
log "benchmarks/bench_service.py --device gpu (HTTP, wrk)"
"$PY" benchmarks/bench_service.py --device gpu --json "$OUT/service.json" >"$OUT/service.txt" 2>&1 || STATUS=1

# -- 5. the summary ------------------------------------------------------------------------------
{
    echo "### GPU check: $(echo "$CARDS" | head -1 | cut -d, -f2 | sed 's/^ //') ($(date -u +%Y-%m-%d))"
    echo
    echo "\`make gpu-check\` (deploy/gpu-check.sh), output in \`$OUT/\`."
    echo
    echo '```'
    cat "$OUT/card.txt"
    echo '```'
    echo
    echo "gpu-marked tests (\`pytest -m gpu\`): $COUNTS"
    echo
    echo "Engine (\`benchmarks/bench_engine.py\`, warm calls):"
    echo
    echo "$ENGINE_MD"
    echo
    echo "Service (\`benchmarks/bench_service.py --device gpu\`):"
    echo
    cat "$OUT/service.txt"
} >"$OUT/summary.md"
echo
cat "$OUT/summary.md"
if [ "$RECORD" = 1 ]; then
    printf '\n' >>docs/benchmarks.md
    cat "$OUT/summary.md" >>docs/benchmarks.md
    log "appended to docs/benchmarks.md"
fi
if [ "$STATUS" = 0 ]; then
    log "gpu check passed"
else
    log "gpu check FAILED (see $OUT/)"
fi
exit "$STATUS"
