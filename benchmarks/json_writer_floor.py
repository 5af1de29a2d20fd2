"""How long writing the MLP's gradients as JSON text takes at best on this machine, beside the
engine call that computes them (issue 14's goal: the MLP JSON answer within 4x of in-process).

Three writers on the same 669,706 float32 gradients (``bench_service.engine_gradients``):

  * orjson, one call over the list of arrays (``OPT_SERIALIZE_NUMPY``): what gradserve's ``json``
    answer is made by;
  * ``std::to_chars`` (libstdc++'s Ryu: shortest round-trip digits), one thread and two
    (``benchmarks/float_text_floor.cpp``, built with g++ here; skipped without g++);

and the warm in-process engine call. Prints JSON. Usage:
``python benchmarks/json_writer_floor.py [--repeats 15]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_service import InProcessMLP, Writers, engine_gradients  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    mlp = json.loads((ROOT / "tests" / "fixtures" / "mlp.json").read_text())
    gradients = engine_gradients(mlp)
    out: dict[str, float | int | str] = {
        "floats": int(sum(g.size for g in gradients)),
        "engine_call_ms": InProcessMLP().p50_ms(args.repeats * 2),
        "orjson_ms": Writers(gradients).p50_ms("json", args.repeats),
    }
    compiler = shutil.which("g++")
    if compiler is None:
        out["to_chars"] = "skipped: no g++"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            exe, data = Path(tmp, "float_text_floor"), Path(tmp, "gradients.f32")
            subprocess.run([compiler, "-O2", "-std=c++17", "-pthread", str(ROOT / "benchmarks" / "float_text_floor.cpp"),
                            "-o", str(exe)], check=True)
            np.concatenate([g.reshape(-1) for g in gradients]).astype("<f4").tofile(data)
            measured = json.loads(subprocess.run([str(exe), str(data), str(args.repeats)], check=True,
                                                 capture_output=True, text=True).stdout)
            out["to_chars_one_thread_ms"] = measured["one_thread_ms"]
            out["to_chars_two_threads_ms"] = measured["two_threads_ms"]
    engine_ms = float(out["engine_call_ms"])
    for key in [k for k in out if k.endswith("_ms") and k != "engine_call_ms"]:
        out[key.removesuffix("_ms") + "_vs_engine_call"] = round(float(out[key]) / engine_ms, 2)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
