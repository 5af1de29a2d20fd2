"""service.ipc.messages: every message between the server and a worker, through the real framing."""

from __future__ import annotations

import pickletools

import ml_dtypes
import numpy as np
import pytest

from engine.transforms import GradOperation, from_wire, to_wire
from service.ipc import messages as m
from service.ipc.framing import _BUF, _HEAD, _LEN, decode_frame, encode_msg
from service.ipc.messages import GradJob, JobResult, pack, unpack


def _through_the_frame(msg: tuple) -> tuple:
    parts, region = encode_msg(msg)
    assert region is None  # no arena given: every buffer travels inline
    frame = bytearray(b"".join(bytes(p) for p in parts))
    (length,) = _LEN.unpack_from(frame, 0)
    assert length == len(frame) - _LEN.size
    return decode_frame(frame[_LEN.size:])


ARRAYS = [
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.arange(6, dtype=ml_dtypes.bfloat16).reshape(3, 2),  # not a NumPy built-in: NumPy pickles it
    np.arange(4, dtype=">f4"),  # big-endian
    np.zeros((0, 3), np.float64),
    np.array(2.5, np.float16),  # 0-d
    np.arange(10, dtype=np.int64)[::3],  # not contiguous
    np.array([True, False]),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_an_array_comes_back_equal(array: np.ndarray) -> None:
    (back,) = _through_the_frame(("x", pack(array)))[1:]
    back = unpack(back)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_a_job_comes_back_field_for_field() -> None:
    spec = to_wire(GradOperation(get_all=True, get_by_list=True, sens_param=True, weights=("w", "b"),
                                 return_value=True))
    job = GradJob(
        network_id="sha256:abc", inputs={"x": ARRAYS[0], "y": ARRAYS[5]}, spec=spec,
        extra=[ARRAYS[4], ARRAYS[3]], parameters={"w": ARRAYS[1]},
        deadline=12.5, network_doc={"format": "gradnet/1", "nodes": []},
        network_path="network.",
    )
    msg = _through_the_frame(m.job(7, job, 3.0))
    assert msg[0] == m.JOB
    job_id, back, sent_at = m.read_job(msg)
    assert (job_id, sent_at) == (7, 3.0)
    for name in ("network_id", "spec", "deadline", "network_doc", "network_path"):
        assert getattr(back, name) == getattr(job, name), name
    assert set(back.inputs) == {"x", "y"} and set(back.parameters) == {"w"}
    np.testing.assert_array_equal(back.inputs["y"], job.inputs["y"])
    np.testing.assert_array_equal(back.parameters["w"], job.parameters["w"])
    assert [s.shape for s in back.extra] == [(), (0, 3)]
    assert from_wire(back.spec) == from_wire(spec)


def test_a_result_comes_back_with_nested_gradients() -> None:
    result = JobResult({"gradients": [[ARRAYS[0]], [ARRAYS[2], ARRAYS[6]]], "gradient_names": [["x"], ["w", "b"]],
                        "value": [ARRAYS[4]]}, timing_ms={"compute": 1.5}, cache_hit=True,
                       cache_stats={"hits": 3.0})
    job_id, back, evicted = m.read_result(_through_the_frame(m.result(1, result, ["sha256:old"])))
    assert (job_id, evicted) == (1, ["sha256:old"])
    assert back.gradient_names == result.gradient_names and back.value[0].shape == ()
    np.testing.assert_array_equal(back.gradients[1][0], ARRAYS[2])
    assert back.gradients[1][1].dtype == np.bool_
    assert (back.timing_ms, back.cache_hit, back.cache_stats) == ({"compute": 1.5}, True, {"hits": 3.0})


def test_a_tutorial_job_pickles_no_class_or_function_reference() -> None:
    job = GradJob(network_id="sha256:abc", inputs=ARRAYS[:1] + ARRAYS[5:6], spec=to_wire(GradOperation(get_all=True)),
                  deadline=1.0)
    parts, _ = encode_msg(m.job(1, job, 0.0))
    frame = b"".join(bytes(p) for p in parts)[_LEN.size:]
    count, payload_len, _, _ = _HEAD.unpack_from(frame, 0)
    start = _HEAD.size + count * _BUF.size
    opcodes = {op.name for op, _, _ in pickletools.genops(frame[start:start + payload_len])}
    assert not opcodes & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ"}, opcodes
    assert "NEXT_BUFFER" in opcodes  # the arrays' bytes travel out of band


def test_every_other_message_is_read_back_by_its_reader() -> None:
    stats = {"hits": 1.0}
    assert m.read_error(_through_the_frame(m.error(3, "ShapeError", "bad", "inputs[0]", stats, ["a"]))) == (
        3, "ShapeError", "bad", "inputs[0]", stats, ["a"])
    assert m.read_expired(_through_the_frame(m.expired(4, stats))) == (4, stats)
    for make, kind, value in ((m.forget, m.FORGET, "sha256:x"), (m.cancel, m.CANCEL, 5),
                              (m.hello, m.HELLO, {"pid": 1}), (m.fatal, m.FATAL, "no engine"),
                              (m.unknown_network, m.UNKNOWN_NETWORK, 6)):
        msg = _through_the_frame(make(value))
        assert msg[0] == kind and m.payload(msg) == value
    assert _through_the_frame(m.stop()) == (m.STOP,)


def test_the_default_spec_is_grad_operation_without_flags() -> None:
    assert GradJob("sha256:x", []).spec == to_wire(GradOperation())


def test_within_a_process_a_job_and_a_result_are_handed_over_as_they_are() -> None:
    """The in-process transport (service/pool/inprocess.py) passes messages without the framing:
    no packing, no copies of the arrays; between processes the framing sends the wire tuples."""
    job = GradJob(network_id="sha256:abc", inputs=[ARRAYS[0]], spec=to_wire(GradOperation(get_all=True)))
    job.program_key = ("sha256:abc", "a key the worker took")
    _, same, _ = m.read_job(m.job(1, job, 0.0))
    assert same is job and same.inputs[0] is ARRAYS[0]
    result = JobResult({"gradients": [ARRAYS[0]]})
    assert m.read_result(m.result(2, result, []))[1] is result
    _, back, _ = m.read_job(_through_the_frame(m.job(1, job, 0.0)))
    assert back is not job and back.program_key is None  # the worker's key is not sent
    np.testing.assert_array_equal(back.inputs[0], ARRAYS[0])
    wire = m.to_wire(m.job(1, job, 0.0))
    assert type(wire[2]) is tuple and wire[2][0] == "sha256:abc"  # plain data for the pickle
    assert m.from_wire(wire)[2].network_id == job.network_id
