"""ONNX models exported from PyTorch, imported and differentiated, against torch.autograd.

The fixtures (``tests/fixtures/onnx/<model>.<exporter>.onnx`` and ``.npz``) are made by
``tools/onnx_oracle.py`` with PyTorch 2.13 in a separate environment; this test needs neither
PyTorch nor onnxruntime. Each model is imported to gradnet/1 by ``engine.onnx.import_model`` and
differentiated by ``Engine.grad`` (get_all + get_by_list, without and with ``sens``); the
gradients of every input and of every floating initializer that holds a torch parameter or buffer
must match torch's within 1e-4, relative to the largest element of each gradient.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import engine
import engine.onnx

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "onnx"
CASES = sorted(p.name[: -len(".onnx")] for p in FIXTURES.glob("*.onnx"))
RTOL = 1e-4


@pytest.fixture(scope="module")
def eng():
    return engine.Engine(cache_size=256)


def close(actual, golden, what):
    actual, golden = np.asarray(actual, np.float64), np.asarray(golden, np.float64)
    assert actual.shape == golden.shape, f"{what}: shape {actual.shape}, torch's {golden.shape}"
    scale = max(float(np.abs(golden).max(initial=0.0)), 1e-6)
    np.testing.assert_allclose(actual, golden, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def load(case):
    doc = engine.onnx.import_model((FIXTURES / f"{case}.onnx").read_bytes())
    golden = np.load(FIXTURES / f"{case}.npz")
    return doc, golden


def test_every_model_and_exporter_has_a_fixture():
    models = {"mlp", "mlp_dynamic", "cnn_dynamic", "transformer_dynamic", "lstm_dynamic", "cnn", "resblock", "stem", "decoder", "transformer", "lstm", "gru", "embedding",
              "activations"}
    exporters = {"dynamo", "dynamo_noopt", "torchscript"}
    have = {tuple(c.split(".")) for c in CASES}
    missing = sorted(f"{m}.{e}" for m in models for e in exporters if (m, e) not in have)
    assert not missing, f"fixtures missing (run tools/onnx_oracle.py): {missing}"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_sens", [False, True], ids=["ones", "sens"])
def test_gradients_match_torch(eng, case, with_sens):
    doc, golden = load(case)
    net = engine.parse_network(doc)
    inputs = [golden[f"input/{spec.name}"] for spec in net.inputs]
    assert len(inputs) == len(net.inputs)
    trainable = list(net.trainable)
    kind = "sens" if with_sens else "ones"
    sens = [golden[f"sens/{k}"] for k in range(len(net.outputs))]
    kwargs = {"sens_param": True, "sens": sens if len(sens) > 1 else sens[0]} if with_sens else {}
    result = eng.grad(net, inputs, get_all=True, get_by_list=True, return_value=True, **kwargs)
    for k, value in enumerate(result.value):
        close(value, golden[f"value/{k}"], f"{case}: output {k}")
    input_grads, weight_grads = result.gradients
    names_in, names_w = result.gradient_names
    assert names_w == trainable
    for name, g, x in zip(names_in, input_grads, inputs):
        if np.issubdtype(x.dtype, np.floating):
            close(g, golden[f"grad/{kind}/{name}"], f"{case}: input {name}")
        else:
            assert g.dtype == x.dtype and not np.any(g), f"{case}: integer input {name} must get zeros"
    unmapped = set(json.loads(str(golden["unmapped"])))
    checked = 0
    for name, g in zip(names_w, weight_grads):
        key = f"grad/{kind}/{name}"
        if key in golden:
            close(g, golden[key], f"{case}: initializer {name}")
            checked += 1
        else:
            # only exporter-made constants (no torch tensor behind them) go unchecked
            assert name in unmapped, f"{case}: initializer {name} has no golden gradient"
    initializers = {k.split("/", 2)[2] for k in golden.files if k.startswith("grad/ones/")}
    assert checked == len(initializers - set(names_in)), "every torch-backed initializer is a trainable parameter"


@pytest.mark.parametrize("exporter", ["dynamo", "dynamo_noopt", "torchscript"])
@pytest.mark.parametrize("model", ["mlp_dynamic", "cnn_dynamic", "transformer_dynamic", "lstm_dynamic"])
def test_a_free_batch_dimension_stays_free(eng, model, exporter):
    """Exported with a free batch dimension, the network takes any batch: each example's output
    and input gradient are the golden ones (these models treat the examples independently)."""
    doc, golden = load(f"{model}.{exporter}")
    assert doc["inputs"][0]["shape"][0] is None, doc["inputs"]
    assert None not in doc["inputs"][0]["shape"][1:]
    net = engine.parse_network(doc)
    name = net.inputs[0].name
    x, value, grad = golden["input/" + name], golden["value/0"], golden["grad/ones/" + name]
    n = x.shape[0]
    for pick in ([0], [i % n for i in (1, 0, 2, 1, 0, 2)]):  # batch 1, and batch 6 repeating the examples
        result = eng.grad(net, [x[pick]], return_value=True)
        close(result.value[0], value[pick], f"{model}.{exporter}: batch {len(pick)} output")
        close(result.gradients, grad[pick], f"{model}.{exporter}: batch {len(pick)} input gradient")
