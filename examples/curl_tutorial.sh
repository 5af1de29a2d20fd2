#!/usr/bin/env bash
# The seed tutorial's first result over HTTP: the gradient of MatMul(x * z, y) w.r.t. x.
# Usage: examples/curl_tutorial.sh [BASE_URL]   (default http://127.0.0.1:8000)
# With API keys configured, export GRADSERVE_API_KEY=<key>.
set -euo pipefail
base="${1:-${GRADSERVE_URL:-http://127.0.0.1:8000}}"
auth=()
if [ -n "${GRADSERVE_API_KEY:-}" ]; then auth=(-H "Authorization: Bearer ${GRADSERVE_API_KEY}"); fi

curl --silent --show-error --fail-with-body "${auth[@]}" \
  -H 'Content-Type: application/json' \
  -X POST "${base}/grad" \
  --data @- <<'JSON'
{
  "network": {
    "format": "gradnet/1",
    "name": "tutorial-net",
    "inputs": [{"name": "x"}, {"name": "y"}],
    "parameters": [
      {"name": "z", "value": {"dtype": "float32", "shape": [1], "data": [1.0]}, "requires_grad": true}
    ],
    "nodes": [
      {"name": "xz", "op": "Mul", "inputs": ["x", "z"]},
      {"name": "out", "op": "MatMul", "inputs": ["xz", "y"]}
    ],
    "outputs": ["out"]
  },
  "inputs": [
    {"dtype": "float32", "shape": [2, 3], "data": [[0.8, 0.6, 0.2], [1.8, 1.3, 1.1]]},
    {"dtype": "float32", "shape": [3, 3], "data": [[0.11, 3.3, 1.1], [1.1, 0.2, 1.4], [1.1, 2.2, 0.3]]}
  ]
}
JSON
echo
