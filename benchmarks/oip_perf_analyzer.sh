#!/usr/bin/env bash
# Triton's perf_analyzer and `gradserve loadtest` against one running server, alternating (issue 16).
#
# Usage: benchmarks/oip_perf_analyzer.sh URL [ROUNDS]      (a server without API keys)
#
# perf_analyzer: PyPI's `perf-analyzer` is a placeholder (0.1.0, no binary), and tritonclient's
# manylinux wheels stopped bundling it after 2.41.0; it is taken from that wheel, with the two
# libraries it links: libcudart.so.12 (PyPI's nvidia-cuda-runtime-cu12; no GPU is used over HTTP)
# and libb64 (Debian's libb64-0d, `apt-get install libb64-0d`). All go to var/perf_analyzer/.
#
# perf_analyzer generates its inputs from the model metadata, so its model is the tutorial network
# with declared input shapes (x float32[2,3], y float32[3,3]); it asks for every output the metadata
# lists (grad/x, grad/y, grad/z, value/out: get_all + get_by_list + return_value, binary both ways).
# The load tester's `oip` scenario is the same net with get_all (grad/x, grad/y), binary both ways;
# `tutorial` is the same call on POST /grad (network-id mode, binary).
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${1:?usage: $0 URL [ROUNDS]}
ROUNDS=${2:-2}
DIR=var/perf_analyzer
PA=$DIR/bin/perf_analyzer
if [ ! -x "$PA" ]; then
  mkdir -p "$DIR/wheels"
  .venv/bin/pip download --quiet --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
    'tritonclient==2.41.0' -d "$DIR/wheels"
  .venv/bin/pip download --quiet --no-deps --only-binary=:all: nvidia-cuda-runtime-cu12 -d "$DIR/wheels"
  (cd "$DIR" && for w in wheels/*.whl; do python3 -m zipfile -e "$w" unpacked; done)
  mkdir -p "$DIR/bin" "$DIR/lib"
  cp "$DIR"/unpacked/tritonclient-2.41.0.data/data/bin/perf_analyzer "$PA" && chmod +x "$PA"
  cp "$DIR"/unpacked/nvidia/cuda_runtime/lib/libcudart.so.12 "$DIR/lib/"
fi
export LD_LIBRARY_PATH=$PWD/$DIR/lib
NET='{"format": "gradnet/1", "name": "tutorial-declared",
  "inputs": [{"name": "x", "dtype": "float32", "shape": [2, 3]}, {"name": "y", "dtype": "float32", "shape": [3, 3]}],
  "parameters": [{"name": "z", "value": {"dtype": "float32", "shape": [1], "data": [1.0]}}],
  "nodes": [{"name": "xz", "op": "Mul", "inputs": ["x", "z"]}, {"name": "out", "op": "MatMul", "inputs": ["xz", "y"]}],
  "outputs": ["out"]}'
MODEL=$(curl -s "$URL/networks" -H 'Content-Type: application/json' -d "$NET" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["network_id"].removeprefix("sha256:"))')
OUT=var/perf_analyzer/runs/$(date -u +%Y%m%dT%H%M%S)
mkdir -p "$OUT"
for round in $(seq "$ROUNDS"); do
  for c in 1 4; do
    echo "== round $round perf_analyzer c=$c load $(cut -d' ' -f1-3 /proc/loadavg)"
    timeout 300 "$PA" -m "$MODEL" -u "${URL#http://}" -i http --measurement-interval 5000 \
      --stability-percentage 50 --max-trials 6 --concurrency-range "$c" -f "$OUT/pa-r$round-c$c.csv" 2>&1 \
      | grep -E "Throughput|p50|p99|Avg latency|Request count|Failed|rror" || true
  done
  echo "== round $round gradserve loadtest oip,tutorial binary network-id hey c=1,4 load $(cut -d' ' -f1-3 /proc/loadavg)"
  timeout 300 .venv/bin/gradserve loadtest "$URL" --scenario oip,tutorial --network-id --encoding binary \
    --backend hey --concurrency 1,4 --duration 10 --warmup 5 --no-progress --json "$OUT/lt-r$round.json" | tail -14
done
echo "end load $(cut -d' ' -f1-3 /proc/loadavg); files in $OUT"
