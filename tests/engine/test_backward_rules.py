"""The ops that carry MindSpore's backward rule as a jax.custom_jvp (docs/backward-rules.md):
forward mode works through them and agrees with reverse mode (the rule is linear, so reverse is
its transpose), and second derivatives are the derivatives of the rule. The rules' values
against MindSpore are in the golden files (tests/golden/mindspore/semantics.json)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import engine  # noqa: F401  (tests/conftest.py calls engine.configure_jax(): x64, as in the service)
from engine.ops import OPS

NAN = np.nan


def _op(name):
    return OPS[name].impl


CASES = {
    "SoftmaxCrossEntropyWithLogits": (np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]]),
                                      np.array([[0.5, 0.5, 0.5], [0.2, 0.0, 0.0]])),
    "Pow": (np.array([0.7, 0.5, 3.0, 2.0, 1.5]), np.array([3.0, 1.5, 1.0, -2.0, 0.3])),
    "Maximum": (np.array([NAN, 1.0, 2.0, 3.0, NAN]), np.array([1.0, NAN, 2.0, 1.0, NAN])),
    "Minimum": (np.array([NAN, 1.0, 2.0, 3.0, NAN]), np.array([1.0, NAN, 2.0, 1.0, NAN])),
    "Abs": (np.array([0.0, 2.0, -2.0]),),
    "ReLU6": (np.array([0.0, 6.0, 3.0, 7.0, -1.0]),),
}


def _flat(tree):
    return jnp.concatenate([jnp.ravel(t) for t in jax.tree_util.tree_leaves(tree)])


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_mode_is_the_transpose_of_reverse_mode(name):
    """<J t, g> == <t, J^T g> for random t and g, both computed through the custom rule."""
    f = _op(name)
    args = CASES[name]
    rng = np.random.default_rng(0)
    t = tuple(rng.standard_normal(a.shape) for a in args)
    out, jt = jax.jvp(f, args, t)
    g = jax.tree_util.tree_map(lambda o: rng.standard_normal(np.shape(o)), out)
    _, vjp = jax.vjp(f, *args)
    jg = vjp(g)
    lhs = _flat(jax.tree_util.tree_map(lambda a, b: a * b, jt, g))
    rhs = _flat(jax.tree_util.tree_map(lambda a, b: a * b, t, jg))
    finite_l, finite_r = lhs[jnp.isfinite(lhs)].sum(), rhs[jnp.isfinite(rhs)].sum()
    np.testing.assert_allclose(finite_l, finite_r, rtol=1e-12, atol=1e-12)


def test_softmax_cross_entropy_rule_in_both_modes():
    logits, labels = CASES["SoftmaxCrossEntropyWithLogits"]
    f = _op("SoftmaxCrossEntropyWithLogits")
    rule = jax.nn.softmax(logits, axis=-1) - labels  # MindSpore's dlogits for dloss = 1
    g_logits, g_labels = jax.grad(lambda a, b: f(a, b)[0].sum(), argnums=(0, 1))(logits, labels)
    np.testing.assert_allclose(g_logits, rule, rtol=1e-12)
    assert not np.any(g_labels)
    jac = jax.jacfwd(lambda a: f(a, labels)[0])(logits)  # [rows, rows, classes]
    np.testing.assert_allclose(np.einsum("iik->ik", jac), rule, rtol=1e-12)
    # the second output (backprop) and the labels pass nothing back
    assert not np.any(jax.grad(lambda a: f(a, labels)[1].sum())(logits))


def test_softmax_cross_entropy_hessian_is_softmax_s_not_zero():
    """Second order is the derivative of the rule: for rows of labels that sum to 1 that is the
    loss's true Hessian (MindSpore gives zero there; API.md section 7)."""
    logits = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
    labels = np.array([[0.2, 0.3, 0.5], [0.1, 0.0, 0.9]])
    f = _op("SoftmaxCrossEntropyWithLogits")
    h = jax.hessian(lambda a: f(a, labels)[0].sum())(logits)
    true = jax.hessian(lambda a: -(labels * jax.nn.log_softmax(a)).sum())(logits)
    assert np.abs(true).max() > 0.1
    np.testing.assert_allclose(h, true, rtol=1e-10, atol=1e-12)
    hvp = jax.jvp(jax.grad(lambda a: f(a, labels)[0].sum()), (logits,), (np.ones_like(logits),))[1]
    np.testing.assert_allclose(hvp, np.einsum("ijkl,kl->ij", true, np.ones_like(logits)), atol=1e-12)


def test_pow_exponent_gradient_at_zero_is_mindspores():
    x = np.array([0.0, 0.0, 0.0, 0.0, -2.0, 2.0])
    y = np.array([1.0, 0.0, -1.0, NAN, 2.0, -2.0])
    dy = np.asarray(jax.grad(lambda a, b: _op("Pow")(a, b).sum(), argnums=(0, 1))(x, y)[1])
    np.testing.assert_array_equal(dy[:3], [0.0, 0.0, -np.inf])
    assert np.isnan(dy[3]) and np.isnan(dy[4])
    np.testing.assert_allclose(dy[5], 0.25 * np.log(2.0))
    # forward mode gives the same coefficient
    tangent = jax.jvp(lambda b: _op("Pow")(x, b), (y,), (np.ones_like(y),))[1]
    np.testing.assert_array_equal(tangent[:3], [0.0, 0.0, -np.inf])


@pytest.mark.parametrize("name", ["Maximum", "Minimum"])
def test_nan_operand_sends_the_whole_gradient_to_both(name):
    x, y = CASES[name]
    gx, gy = jax.grad(lambda a, b: _op(name)(a, b).sum(), argnums=(0, 1))(x, y)
    gx, gy = np.asarray(gx), np.asarray(gy)
    np.testing.assert_array_equal(gx[[0, 1, 4]], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(gy[[0, 1, 4]], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal([gx[2], gy[2]], [0.5, 0.5])  # a tie: half each
    win = 1.0 if name == "Maximum" else 0.0  # x = 3 against y = 1
    np.testing.assert_array_equal([gx[3], gy[3]], [win, 1.0 - win])


def test_integer_operands_keep_jax_semantics():
    a, b = np.array([1, 5, 2], np.int32), np.array([3, 1, 2], np.int32)
    np.testing.assert_array_equal(_op("Maximum")(a, b), [3, 5, 2])
    np.testing.assert_array_equal(_op("Pow")(a, b), [1, 5, 4])
    assert _op("Pow")(a, b).dtype == np.int32
