"""Elementwise primitives: arithmetic, activations, comparisons, Cast, Select."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from ..dtypes import DTYPES
from .catalog import Attr, op

XY = ("x", "y")




# Where MindSpore's registered backward is not JAX's derivative (API.md section 3), the op carries
# a jax.custom_jvp, not a custom_vjp: its tangent rule is linear in the tangents, so reverse mode
# (JAX transposes it) gives MindSpore's backward, forward mode (/jvp, forward /jacobian, /hvp)
# gives the same first-order rule, and differentiating the rule again gives second derivatives.

# MindSpore's AbsGrad is dy * sign(x) (0 at 0) and ReLU6Grad passes dy on 0 < x <= 6 (so 1 at
# 6); JAX's defaults differ at exactly those points.
@jax.custom_jvp
def _abs(x: jax.Array) -> jax.Array:
    return jnp.abs(x)


_abs.defjvp(lambda primals, tangents: (_abs(primals[0]), tangents[0] * jnp.sign(primals[0])))


@jax.custom_jvp
def _relu6(x: jax.Array) -> jax.Array:
    return jnp.clip(x, 0, 6)


@_relu6.defjvp
def _relu6_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _relu6(x), jnp.where((x > 0) & (x <= 6), t, jnp.zeros_like(t))


# MindSpore's MinimumMaximumGrad (grad_math_ops.cc): a tie (x == y) gives each side half, then
# x gets nothing where x < y (Maximum) or x > y (Minimum), else everything; y likewise. A NaN
# operand is neither equal, less nor greater, so BOTH sides get the whole cotangent (MindSpore
# 2.10 measured: x = [nan, 1, 2], y = [1, nan, 2] give [1, 1, 0.5] to each); JAX gives both 0.
def _extremum(pick, loses):
    @jax.custom_jvp
    def f(x, y):
        return pick(x, y)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        out = f(x, y)
        half = jnp.asarray(0.5, out.dtype)
        cx = jnp.where(x == y, half, jnp.where(loses(x, y), 0, 1).astype(out.dtype))
        cy = jnp.where(x == y, half, jnp.where(loses(y, x), 0, 1).astype(out.dtype))
        return out, cx * tx.astype(out.dtype) + cy * ty.astype(out.dtype)

    return f


_maximum = _extremum(jnp.maximum, lambda a, b: a < b)
_minimum = _extremum(jnp.minimum, lambda a, b: a > b)


# Pow: d/dx is JAX's. d/dy (the exponent) is out * log(x) as in JAX and MindSpore, except at
# x == 0, where the two differ and MindSpore 2.10 is the contract (measured on CPU, float32 and
# float64): 0 where y >= 0 (JAX: 0 too) and -inf where y < 0 (JAX: NaN, from log(1) * inf);
# NaN where y is NaN. x < 0 gives NaN in both (log of a negative number). MindSpore's source
# reads select(x < 0, 1, x) inside the log, which would give 0 there, but 2.10 does not.
@jax.custom_jvp
def _pow(x, y):
    return jnp.power(x, y)


def _pow_jvp(primals, tangents):
    # Symbolic zeros: a tangent that is structurally zero (x or y held constant) adds nothing, so
    # differentiating in y alone at x == 0, y < 0 gives -inf, not 0 * inf = NaN from the x term.
    (x, y), (tx, ty) = primals, tangents
    out = _pow(x, y)
    tangent = jnp.zeros(out.shape, out.dtype)
    if not isinstance(tx, SymbolicZero):
        tangent = tangent + jax.jvp(lambda a: jnp.power(a, y), (x,), (tx,))[1]
    if not isinstance(ty, SymbolicZero):
        zero = x == 0
        at_zero = jnp.where(y >= 0, 0.0, jnp.where(y < 0, -jnp.inf, jnp.nan)).astype(out.dtype)
        coef = jnp.where(zero, at_zero, out * jnp.log(jnp.where(zero, jnp.ones_like(x), x)))
        tangent = tangent + coef * ty.astype(out.dtype)
    return out, tangent


_pow.defjvp(_pow_jvp, symbolic_zeros=True)


def _inexact(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


@op("Add", inputs=XY)
def add(x, y):
    """x + y, with broadcasting."""
    return x + y


@op("Sub", inputs=XY)
def sub(x, y):
    """x - y, with broadcasting."""
    return x - y


@op("Mul", inputs=XY)
def mul(x, y):
    """x * y, with broadcasting."""
    return x * y


def _divide(x, y):
    if jnp.issubdtype(jnp.result_type(x, y), jnp.integer):
        return jnp.floor_divide(x, y)
    return x / y


@op("Div", inputs=XY)
def div(x, y):
    """x / y (floor division for integers)."""
    return _divide(x, y)


@op("RealDiv", inputs=XY)
def real_div(x, y):
    """x / y."""
    return _divide(x, y)


@op("Pow", inputs=XY)
def pow_(x, y):
    """x ** y (the exponent's gradient at x == 0 is MindSpore's: 0 for y >= 0, -inf for y < 0)."""
    if _inexact(x) and _inexact(y):
        return _pow(x, y)
    return jnp.power(x, y)


@op("Maximum", inputs=XY)
def maximum(x, y):
    """Elementwise maximum; on a tie the gradient is split equally and a NaN operand sends the whole
    gradient to both sides, as in MindSpore."""
    if _inexact(x) and _inexact(y):
        return _maximum(x, y)
    return jnp.maximum(x, y)


@op("Minimum", inputs=XY)
def minimum(x, y):
    """Elementwise minimum; on a tie the gradient is split equally and a NaN operand sends the whole
    gradient to both sides, as in MindSpore."""
    if _inexact(x) and _inexact(y):
        return _minimum(x, y)
    return jnp.minimum(x, y)


@op("SquaredDifference", inputs=XY)
def squared_difference(x, y):
    """(x - y) ** 2."""
    d = x - y
    return d * d


@op("Neg")
def neg(x):
    """-x."""
    return -x


@op("Abs")
def abs_(x):
    """|x| (gradient sign(x), so 0 at 0)."""
    return _abs(x) if _inexact(x) else jnp.abs(x)


@op("Exp")
def exp(x):
    """e ** x."""
    return jnp.exp(x)


@op("Log")
def log(x):
    """Natural logarithm."""
    return jnp.log(x)


@op("Log1p")
def log1p(x):
    """log(1 + x)."""
    return jnp.log1p(x)


@op("Sqrt")
def sqrt(x):
    """Square root."""
    return jnp.sqrt(x)


@op("Rsqrt")
def rsqrt(x):
    """1 / sqrt(x)."""
    return lax.rsqrt(x)


@op("Square")
def square(x):
    """x * x."""
    return x * x


@op("Reciprocal")
def reciprocal(x):
    """1 / x."""
    return 1 / x


@op("Sin")
def sin(x):
    """Sine."""
    return jnp.sin(x)


@op("Cos")
def cos(x):
    """Cosine."""
    return jnp.cos(x)


@op("Tanh")
def tanh(x):
    """Hyperbolic tangent."""
    return jnp.tanh(x)


@op("Sigmoid")
def sigmoid(x):
    """1 / (1 + exp(-x))."""
    return jax.nn.sigmoid(x)


@op("ReLU")
def relu(x):
    """max(x, 0); gradient 0 at 0."""
    return jax.nn.relu(x)


@op("ReLU6")
def relu6(x):
    """min(max(x, 0), 6); gradient 1 on 0 < x <= 6, as in MindSpore."""
    return _relu6(x) if _inexact(x) else jnp.clip(x, 0, 6)


@op("GeLU")
def gelu(x):
    """Gaussian error linear unit, MindSpore's tanh approximation."""
    return jax.nn.gelu(x, approximate=True)


@op("Softplus")
def softplus(x):
    """log(1 + exp(x))."""
    return jax.nn.softplus(x)


@op("Erf")
def erf(x):
    """The error function."""
    return lax.erf(x)


@op("Sign")
def sign(x):
    """-1, 0 or 1 (zero gradient)."""
    return jnp.sign(x)


@op("Floor")
def floor(x):
    """Round down (zero gradient)."""
    return jnp.floor(x)


@op("Cast", attrs=(Attr("dtype", "dtype", doc="the target dtype, e.g. \"float32\""),))
def cast(x, *, dtype):
    """Convert x to ``dtype``; the gradient is cast back."""
    return x.astype(DTYPES[dtype])


@op("Select", inputs=("cond", "x", "y"))
def select(cond, x, y):
    """x where cond is true, else y."""
    return jnp.where(cond, x, y)


@op("Equal", inputs=XY)
def equal(x, y):
    """x == y (bool, not differentiable)."""
    return x == y


@op("Greater", inputs=XY)
def greater(x, y):
    """x > y (bool)."""
    return x > y


@op("GreaterEqual", inputs=XY)
def greater_equal(x, y):
    """x >= y (bool)."""
    return x >= y


@op("Less", inputs=XY)
def less(x, y):
    """x < y (bool)."""
    return x < y


@op("LessEqual", inputs=XY)
def less_equal(x, y):
    """x <= y (bool)."""
    return x <= y


@op("StopGradient")
def stop_gradient(x):
    """Pass x forward and block its gradient (ops.stop_gradient)."""
    return lax.stop_gradient(x)


@op("ZerosLike")
def zeros_like(x):
    """Zeros of x's shape and dtype."""
    return jnp.zeros_like(x)


@op("OnesLike")
def ones_like(x):
    """Ones of x's shape and dtype."""
    return jnp.ones_like(x)


@op("LeakyReLU", attrs=(Attr("alpha", "float", 0.2, doc="the slope for x < 0"),))
def leaky_relu(x, *, alpha):
    """x for x > 0, alpha * x otherwise (gradient alpha at 0, as in MindSpore and PyTorch)."""
    return jnp.where(x > 0, x, x * jnp.asarray(alpha, x.dtype))
