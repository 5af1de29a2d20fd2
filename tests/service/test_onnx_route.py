"""``POST /networks`` with ``Content-Type: application/onnx`` (API.md section 8), through a real
server: exported PyTorch models register as gradnet/1 networks, ``/grad`` by ``network_id``
gives torch.autograd's gradients (the committed goldens of ``tests/fixtures/onnx``, 1e-4
relative), and bad models are 400/413/422 answers that leave the server up.
"""

from __future__ import annotations

import json
import random

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import engine
import engine.onnx
from gradserve_client import GradClient
from tests.engine.test_onnx_oracle import FIXTURES, close
from tests.service.test_readme import BLOCKS, _after, _same_answer
from tests.support import ROOT
from tests.support.servers import KEY_A, LIMITS

ONNX = {"Content-Type": "application/onnx"}
# a CNN with BatchNorm folded by the dynamo exporter, a transformer layer (TorchScript exporter),
# an embedding with integer indices, and a GRU with two outputs
MODELS = ["cnn.dynamo", "transformer.torchscript", "embedding.dynamo_noopt", "gru.dynamo"]


def _model(case: str) -> bytes:
    return (FIXTURES / f"{case}.onnx").read_bytes()


def _tiny(op: str = "Relu", **attrs) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="the_node", **attrs)], "tiny", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def gs(live_server):
    with GradClient(live_server.url, api_key=KEY_A) as c:
        yield c


@pytest.mark.parametrize("case", MODELS)
def test_registered_onnx_model_gives_torch_gradients_by_id(client, gs, case):
    body = _model(case)
    r = client.post("/networks", content=body, headers=ONNX)
    assert r.status_code in (200, 201), r.text
    info = r.json()
    network_id = info["network_id"]
    assert r.headers["location"] == f"/networks/{network_id}"
    # the answer of a gradnet/1 registration, and the converted document under GET /networks/{id}
    doc = engine.onnx.import_model(body)
    net = engine.parse_network(doc)
    assert network_id == net.id
    assert [i["name"] for i in info["inputs"]] == [i.name for i in net.inputs]
    assert [p["name"] for p in info["parameters"]] == [p.name for p in net.parameters]
    assert engine.parse_network(client.get(f"/networks/{network_id}").json()).id == network_id
    again = client.post("/networks", content=body, headers=ONNX)
    assert again.status_code == 200 and again.json()["network_id"] == network_id

    golden = np.load(FIXTURES / f"{case}.npz")
    inputs = [golden[f"input/{spec.name}"] for spec in net.inputs]
    sens = [golden[f"sens/{k}"] for k in range(len(net.outputs))]
    for kind, kwargs in (("ones", {}), ("sens", {"sens_param": True, "sens": sens if len(sens) > 1 else sens[0]})):
        result = gs.grad(network_id, inputs, get_all=True, get_by_list=True, return_value=True,
                         encoding="b64", **kwargs)
        assert result.network_id == network_id
        for k, value in enumerate(result.value):
            close(value, golden[f"value/{k}"], f"{case}: output {k}")
        (names_in, names_w), (grads_in, grads_w) = result.gradient_names, result.gradients
        for name, g, x in zip(names_in, grads_in, inputs):
            if np.issubdtype(x.dtype, np.floating):
                close(g, golden[f"grad/{kind}/{name}"], f"{case}: input {name}")
            else:
                assert g.dtype == x.dtype and not np.any(g)
        checked = 0
        for name, g in zip(names_w, grads_w):
            if f"grad/{kind}/{name}" in golden:
                close(g, golden[f"grad/{kind}/{name}"], f"{case}: initializer {name}")
                checked += 1
        assert checked > 0


def test_media_type_parameters_and_case_are_accepted(client):
    r = client.post("/networks", content=_model("mlp.torchscript"),
                    headers={"Content-Type": "Application/ONNX; charset=binary"})
    assert r.status_code in (200, 201), r.text


def test_not_onnx_is_400(client):
    for body in (b"", b"this is not a protobuf", json.dumps({"format": "gradnet/1"}).encode()):
        r = client.post("/networks", content=body, headers=ONNX)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "invalid_onnx"


def test_unsupported_op_is_422_naming_node_op_and_opset(client):
    assert "Hardmax" not in engine.onnx.SUPPORTED_OPS
    r = client.post("/networks", content=_tiny("Hardmax").SerializeToString(), headers=ONNX)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_onnx_op"
    assert error["path"] == "graph.node[0]"
    assert "the_node" in error["message"] and "Hardmax" in error["message"] and "17" in error["message"]


def test_external_data_is_refused(client):
    model = _tiny("Add")
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 3])
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="weights.bin")
    model.graph.initializer.append(w)
    model.graph.node[0].input.append("w")
    r = client.post("/networks", content=model.SerializeToString(), headers=ONNX)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "onnx_external_data"
    assert "external" in r.json()["error"]["message"]


def test_a_model_over_the_body_limit_is_413(client):
    model = _tiny("Add")
    count = LIMITS["max_body_bytes"] // 4 + 1  # one initializer alone is over the limit
    model.graph.initializer.append(helper.make_tensor("w", TensorProto.FLOAT, [count], np.zeros(count, np.float32).tobytes(), raw=True))
    model.graph.node[0].input.append("w")
    body = model.SerializeToString()
    assert len(body) > LIMITS["max_body_bytes"]
    r = client.post("/networks", content=body, headers=ONNX)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "too_large"


def test_a_model_over_the_node_limit_is_413(server_factory, tmp_path):
    server = server_factory(max_nodes=50)  # an LSTM unrolls to about 100 nodes
    with server.client() as c:
        r = c.post("/networks", content=_model("lstm.torchscript"), headers=ONNX)
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "too_large"
        assert c.post("/networks", content=_model("mlp.torchscript"), headers=ONNX).status_code in (200, 201)


def test_mutated_and_garbage_models_keep_the_server_up(client):
    rng = random.Random(15)
    base = _model("cnn.torchscript")
    statuses: dict[int, int] = {}
    for i in range(60):
        body = bytearray(base)
        if i % 3 == 2:
            body = bytearray(rng.randbytes(rng.randrange(1, 4096)))
        else:
            for _ in range(rng.randrange(1, 8)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            if i % 3 == 1:
                del body[rng.randrange(len(body)):]
        r = client.post("/networks", content=bytes(body), headers=ONNX)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code in (200, 201, 400, 413, 422), (i, r.text)
        assert set(r.json()) == ({"error"} if r.status_code >= 400 else {"network_id", "name", "inputs", "parameters", "outputs"})
    assert statuses.get(400, 0) > 0
    assert client.get("/health/ready").status_code == 200
    assert client.post("/networks", content=base, headers=ONNX).status_code in (200, 201)


def test_ops_lists_the_onnx_ops(client):
    body = client.get("/ops").json()
    assert [op["name"] for op in body["ops"]] == [op["name"] for op in engine.catalog()]
    onnx_ops = body["onnx"]
    assert onnx_ops["ops"] == list(engine.onnx.SUPPORTED_OPS)
    assert {"Gemm", "Conv", "LSTM", "GRU", "LayerNormalization", "Einsum"} <= set(onnx_ops["ops"])
    assert onnx_ops["opsets"] == [engine.onnx.MIN_OPSET, engine.onnx.MAX_OPSET]
    assert onnx_ops["constant_only"] == list(engine.onnx.CONSTANT_ONLY_OPS)


def test_openapi_documents_the_onnx_body():
    schema = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    content = schema["paths"]["/networks"]["post"]["requestBody"]["content"]
    assert content["application/onnx"]["schema"] == {"type": "string", "format": "binary"}
    assert {"application/json", "application/octet-stream"} <= set(content)
    assert "onnx" in schema["components"]["schemas"]["OpCatalog"]["properties"]


def test_readme_onnx_section_answers_as_shown(client):
    """The README's "Networks from PyTorch / ONNX" commands, replayed: the same answers."""
    register = "curl -s http://127.0.0.1:8000/networks -H 'Content-Type: application/onnx' --data-binary @examples/model.onnx"
    (shown,) = _after(register)
    r = client.post("/networks", content=(ROOT / "examples" / "model.onnx").read_bytes(), headers=ONNX)
    assert r.status_code in (200, 201), r.text
    assert r.json() == json.loads(shown)

    prefix = "curl -s http://127.0.0.1:8000/grad -H 'Content-Type: application/json' --data-binary '"
    (command,) = [text for lang, text in BLOCKS if lang == "sh" and text.startswith(prefix)]
    (shown,) = _after(command)
    body = json.loads(command[len(prefix):command.rindex("'")])
    assert body["network_id"] == r.json()["network_id"]
    got = client.post("/grad", json=body)
    assert got.status_code == 200, got.text
    _same_answer(got.json(), json.loads(shown))

    (shown,) = _after("printf 'not onnx' | curl")
    bad = client.post("/networks", content=b"not onnx", headers=ONNX)
    assert bad.status_code == 400 and bad.json() == json.loads(shown)
