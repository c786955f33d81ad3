r"""A small decoder-only (causal) transformer in Flax NNX, with adapter sites.

Pre-LayerNorm blocks (attention, then a GELU MLP, each residual), learned position
embeddings, a final LayerNorm and a linear head. Inputs are real vectors
(``input_dim``: e.g. the interleaved :math:`(x_i, y_i)` tokens of in-context
regression) or token ids (``vocab_size``: a language model); outputs are one vector
per position (``output_dim``: a regression output, or next-token logits).

The frozen network can be *adapted* by a low-dimensional state
:math:`\theta \in \mathbb R^k` through an :class:`~kalmanjax.nn.Adapter` passed at
call time (``model(inputs, adapter=a, theta=theta)``). The adapter is consulted at
these sites:

* ``"block{i}"``: the residual stream entering block ``i`` (``"block0"``: right
  after the embeddings);
* ``"head"``: the normalised residual stream entering the head projection;
* ``"block{i}.attn"`` / ``"block{i}.mlp"``: the output projections of block
  ``i``'s attention and MLP;
* ``"head.proj"``: the head projection itself;
* ``"weights"`` (:class:`~kalmanjax.nn.WeightAdapter`): the parameters
  themselves, offset by :math:`\theta`.

Without an adapter (or with ``theta = 0``) the base model is computed exactly.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax
from jaxtyping import Array, Float

from .adapters import Adapter, WeightAdapter

__all__ = ["Transformer"]


class _LayerNorm(nnx.Module):
    """LayerNorm over the last axis (eps 1e-6), computed in the parameters' dtype."""

    def __init__(self, width: int, *, dtype):
        self.scale = nnx.Param(jnp.ones((width,), dtype))
        self.bias = nnx.Param(jnp.zeros((width,), dtype))

    def __call__(self, x):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * lax.rsqrt(var + 1e-6) * self.scale[...][None, :] + (
            self.bias[...][None, :]
        )


class _Attention(nnx.Module):
    """Causal multi-head self-attention."""

    def __init__(self, width: int, heads: int, *, dtype, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"Transformer: width {width} must divide by heads {heads}")
        self.heads = heads
        self.qkv = nnx.Linear(width, 3 * width, param_dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(width, width, param_dtype=dtype, rngs=rngs)

    def __call__(self, h, site, adapter, theta):
        T, width = h.shape
        hd = width // self.heads
        q, k, v = jnp.split(self.qkv(h), 3, axis=-1)
        q, k, v = (a.reshape(T, self.heads, hd).transpose(1, 0, 2) for a in (q, k, v))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        causal = jnp.tril(jnp.ones((T, T), bool))
        # a finite fill: -inf rows would turn into NaN under differentiation
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min / 2)
        mixed = (jax.nn.softmax(scores, axis=-1) @ v).transpose(1, 0, 2)
        mixed = mixed.reshape(T, width)
        return _project(self.out, mixed, f"{site}.attn", adapter, theta)


class _Block(nnx.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int, *, dtype, rngs):
        self.norm1 = _LayerNorm(width, dtype=dtype)
        self.attn = _Attention(width, heads, dtype=dtype, rngs=rngs)
        self.norm2 = _LayerNorm(width, dtype=dtype)
        self.mlp_in = nnx.Linear(width, mlp_ratio * width, param_dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(
            mlp_ratio * width, width, param_dtype=dtype, rngs=rngs
        )

    def __call__(self, h, site, adapter, theta):
        h = h + self.attn(self.norm1(h), site, adapter, theta)
        a = jax.nn.gelu(self.mlp_in(self.norm2(h)))
        return h + _project(self.mlp_out, a, f"{site}.mlp", adapter, theta)


def _project(linear: nnx.Linear, x, site, adapter, theta):
    out = linear(x)
    if adapter is not None and adapter.site == site:
        out = out + adapter.delta(x, theta)
    return out


def _shift(h, site, adapter, theta):
    if adapter is not None and adapter.site == site:
        return adapter.shift(h, theta)
    return h


class Transformer(nnx.Module):
    r"""Decoder-only causal transformer.

    Args:
        output_dim: size of the per-position output (1 for regression, the
            vocabulary size for next-token logits).
        input_dim: size of real-valued input tokens (give this or ``vocab_size``).
        vocab_size: number of token ids for an embedding input.
        width: residual-stream width.
        depth: number of blocks.
        heads: attention heads (must divide ``width``).
        max_len: longest sequence (learned position embeddings).
        mlp_ratio: MLP hidden size over ``width``.
        dtype: parameter dtype (computations follow it).
        rngs: ``nnx.Rngs`` for the initialisation.

    Call: ``model(inputs, adapter=None, theta=None)`` with ``inputs`` of shape
    ``(T, input_dim)`` (or integer ``(T,)``) returns ``(T, output_dim)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from kalmanjax.nn import Transformer
        >>> net = Transformer(output_dim=1, input_dim=3, width=16, depth=1, heads=2,
        ...                   max_len=8, rngs=nnx.Rngs(0))
        >>> net(jnp.ones((5, 3))).shape
        (5, 1)
    """

    def __init__(
        self,
        *,
        output_dim: int,
        input_dim: int | None = None,
        vocab_size: int | None = None,
        width: int = 64,
        depth: int = 3,
        heads: int = 4,
        max_len: int = 128,
        mlp_ratio: int = 4,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Initialise the parameters (see the class docstring)."""
        if (input_dim is None) == (vocab_size is None):
            raise ValueError("Transformer: give exactly one of input_dim or vocab_size")
        self.input_dim, self.vocab_size = input_dim, vocab_size
        self.width, self.depth, self.max_len = width, depth, max_len
        if input_dim is not None:
            self.embed = nnx.Linear(input_dim, width, param_dtype=dtype, rngs=rngs)
        elif vocab_size is not None:
            self.embed = nnx.Embed(vocab_size, width, param_dtype=dtype, rngs=rngs)
        self.position = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (max_len, width), dtype)
        )
        self.blocks = nnx.List(
            [
                _Block(width, heads, mlp_ratio, dtype=dtype, rngs=rngs)
                for _ in range(depth)
            ]
        )
        self.norm = _LayerNorm(width, dtype=dtype)
        self.head = nnx.Linear(width, output_dim, param_dtype=dtype, rngs=rngs)

    def _check(self, inputs):
        shape = jnp.shape(inputs)
        if self.vocab_size is not None:
            ok = len(shape) == 1 and jnp.issubdtype(inputs.dtype, jnp.integer)
            expected = "(T,) integer token ids"
        else:
            ok = len(shape) == 2 and shape[1] == self.input_dim
            expected = f"(T, {self.input_dim}) (T, input_dim)"
        if not ok:
            raise ValueError(
                f"Transformer: inputs must have shape {expected}, got {shape} "
                f"{getattr(inputs, 'dtype', '')}"
            )
        if shape[0] > self.max_len:
            raise ValueError(
                f"Transformer: sequence length {shape[0]} exceeds "
                f"max_len {self.max_len}"
            )

    def __call__(
        self,
        inputs: Array,
        *,
        adapter: Adapter | None = None,
        theta: Float[Array, " state"] | None = None,
    ) -> Float[Array, "time obs"]:
        """Outputs at every position, shape ``(T, output_dim)``."""
        return self._forward(inputs, adapter, theta)[0]

    def residual_streams(
        self,
        inputs: Array,
        *,
        adapter: Adapter | None = None,
        theta: Float[Array, " state"] | None = None,
    ) -> Float[Array, "layer time width"]:
        """The residual streams entering each block and the head: ``(depth+1, T, w)``.

        Entry ``i < depth`` is the stream entering block ``i`` (after any adapter at
        that site); entry ``depth`` is the normalised stream entering the head
        projection. For probing what the network represents.
        """
        return jnp.stack(self._forward(inputs, adapter, theta)[1])

    def _forward(self, inputs, adapter, theta):
        self._check(inputs)
        if adapter is not None:
            adapter.check(theta, self)
        if isinstance(adapter, WeightAdapter):
            return adapter.adapted(self, theta)._forward(inputs, None, None)
        T = inputs.shape[0]
        h = self.embed(inputs) + self.position[...][:T]
        streams = []
        for i, block in enumerate(self.blocks):
            site = f"block{i}"
            h = _shift(h, site, adapter, theta)
            streams.append(h)
            h = block(h, site, adapter, theta)
        h = _shift(self.norm(h), "head", adapter, theta)
        streams.append(h)
        return _project(self.head, h, "head.proj", adapter, theta), streams
