r"""Adaptation states: where a low-dimensional :math:`\theta` enters the network.

:math:`\theta \in \mathbb R^k` adapts a frozen :class:`~kalmanjax.nn.Transformer`.

An adapter holds fixed random directions (``AdapterBasis`` variables, not
``nnx.Param``, so optimisers over the network's parameters leave them alone) and
maps :math:`\theta` to a perturbation at one *site* of the network:

* :class:`ResidualShift`: :math:`h \mapsto h + U\theta` on the residual stream
  (a steering vector in a :math:`k`-dimensional subspace), at ``"block{i}"`` or
  ``"head"``;
* :class:`LowRankAdapter`: a projection :math:`W x \mapsto W x + B
  \operatorname{diag}(\theta) A x` (a rank-:math:`k` LoRA whose factors are fixed
  and whose :math:`k` singular values are :math:`\theta`), at ``"block{i}.attn"``,
  ``"block{i}.mlp"`` or ``"head.proj"``.

Both are linear in :math:`\theta` and exactly zero at :math:`\theta = 0`. (A LoRA
whose two trainable factors both start at zero has a zero Jacobian there, so an
EKF over them would never move; fixing the directions avoids that.)

:class:`WeightAdapter` instead makes :math:`\theta` an offset of the network's own
parameters, all of them or those of chosen modules, as one flat vector
(:math:`k \approx 1.5 \times 10^5` for the shipped in-context transformer): the
state of :func:`kalmanjax.low_rank_filter` and :func:`kalmanjax.diagonal_filter`
when the whole network is filtered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

__all__ = [
    "Adapter",
    "AdapterBasis",
    "LowRankAdapter",
    "ResidualShift",
    "WeightAdapter",
]


class AdapterBasis(nnx.Variable):
    """A fixed (non-trainable) array of an adapter."""


def _site_sizes(model, site: str) -> tuple[int, int]:
    """(input, output) sizes of the tensor an adapter at ``site`` perturbs."""
    width = model.width
    m = re.fullmatch(r"block(\d+)(\.attn|\.mlp)?", site)
    if m and int(m.group(1)) < model.depth:
        if m.group(2) == ".mlp":
            return model.blocks[0].mlp_out.in_features, width
        return width, width
    if site == "head":
        return width, width
    if site == "head.proj":
        return width, model.head.out_features
    raise ValueError(
        f"adapter: unknown site {site!r}; choose 'block0'..'block{model.depth - 1}' "
        "or 'head' (residual stream), or 'block{i}.attn', 'block{i}.mlp' or "
        "'head.proj' (projections)"
    )


def _site_projection(model, site: str) -> nnx.Linear:
    """The ``nnx.Linear`` a projection site perturbs."""
    if site == "head.proj":
        return model.head
    block, part = site.split(".")
    i = int(block.removeprefix("block"))
    return model.blocks[i].attn.out if part == "attn" else model.blocks[i].mlp_out


class Adapter(nnx.Module):
    """Base class: an adaptation state of size ``dim`` entering at ``site``."""

    site: str
    dim: int

    def shift(self, h: Array, theta: Array) -> Array:
        """Residual-stream sites: the adapted stream (``h`` is ``(T, width)``)."""
        raise NotImplementedError

    def delta(self, x: Array, theta: Array) -> Array:
        """Projection sites: the change of the projection's output for input ``x``."""
        raise NotImplementedError

    def check(self, theta: Array, model) -> None:
        """Raise unless ``theta`` is a ``(dim,)`` vector of the model's dtype."""
        dtype = model.head.kernel[...].dtype
        if np.shape(theta) != (self.dim,):
            raise ValueError(
                f"{type(self).__name__}: theta must have shape ({self.dim},) (k,), "
                f"got {np.shape(theta)}"
            )
        if jnp.result_type(theta) != dtype:
            raise TypeError(
                f"{type(self).__name__}: theta has dtype {jnp.result_type(theta)} "
                f"but the network's parameters are {dtype}"
            )


class ResidualShift(Adapter):
    r"""Shift the residual stream by :math:`U\theta` at one site.

    :math:`U` is ``(width, dim)`` with unit-norm random columns.

    Args:
        model: the :class:`~kalmanjax.nn.Transformer` it adapts (for the sizes).
        site: ``"block{i}"`` (input of block ``i``) or ``"head"``.
        dim: :math:`k`, the size of :math:`\theta`.
        rngs: ``nnx.Rngs`` for the directions.
    """

    def __init__(self, model, site: str, dim: int, *, rngs: nnx.Rngs):
        """Draw the directions (see the class docstring)."""
        if "." in site:
            raise ValueError(
                f"ResidualShift: site must be a residual-stream site ('block{{i}}' or "
                f"'head'), got {site!r}; use LowRankAdapter for projections"
            )
        _, width = _site_sizes(model, site)
        dtype = model.head.kernel[...].dtype
        self.site, self.dim = site, dim
        u = jax.random.normal(rngs.params(), (width, dim), dtype)
        self.basis = AdapterBasis(u / jnp.linalg.norm(u, axis=0, keepdims=True))

    def shift(self, h, theta):
        r""":math:`h + U\theta` (broadcast over positions)."""
        return h + (self.basis[...] @ theta)[None, :]


class LowRankAdapter(Adapter):
    r"""Add :math:`B\operatorname{diag}(\theta)A x` to a projection's output.

    :math:`A` is ``(dim, in)`` and :math:`B` is ``(out, dim)``, fixed, with unit-norm
    rows and columns: random (``basis="random"``), or (``basis="svd"``) the leading
    singular vectors of the projection's own weight :math:`W = \sum_j \sigma_j u_j
    v_j^\top` first, :math:`B_{:j} = u_j`, :math:`A_{j:} = v_j^\top`, so that
    :math:`\theta_j` changes the singular value :math:`\sigma_j` (the principal
    directions of PiSSA, Meng et al. 2024); beyond the weight's rank the
    remaining directions are random.

    Args:
        model: the :class:`~kalmanjax.nn.Transformer` it adapts.
        site: ``"block{i}.attn"``, ``"block{i}.mlp"`` or ``"head.proj"``.
        dim: :math:`k`, the size of :math:`\theta` (the adapter's rank).
        basis: ``"random"`` or ``"svd"``.
        rngs: ``nnx.Rngs`` for the (random) factors.
    """

    def __init__(
        self, model, site: str, dim: int, *, basis: str = "random", rngs: nnx.Rngs
    ):
        """Draw the factors (see the class docstring)."""
        if not (site.endswith((".attn", ".mlp")) or site == "head.proj"):
            raise ValueError(
                f"LowRankAdapter: site must be a projection ('block{{i}}.attn', "
                f"'block{{i}}.mlp' or 'head.proj'), got {site!r}"
            )
        if basis not in ("random", "svd"):
            raise ValueError(
                f"LowRankAdapter: basis must be 'random' or 'svd', got {basis!r}"
            )
        n_in, n_out = _site_sizes(model, site)
        dtype = model.head.kernel[...].dtype
        self.site, self.dim = site, dim
        a = jax.random.normal(rngs.params(), (dim, n_in), dtype)
        b = jax.random.normal(rngs.params(), (n_out, dim), dtype)
        a = a / jnp.linalg.norm(a, axis=1, keepdims=True)
        b = b / jnp.linalg.norm(b, axis=0, keepdims=True)
        if basis == "svd":
            # x W with kernel W (in, out): the map is W^T = U S V^T, (out, in)
            kernel = np.asarray(_site_projection(model, site).kernel[...], np.float64)
            u, sv, vt = np.linalg.svd(kernel.T, full_matrices=False)
            r = min(dim, int(np.sum(sv > sv[0] * 1e-6)))
            a = a.at[:r].set(jnp.asarray(vt[:r], dtype))
            b = b.at[:, :r].set(jnp.asarray(u[:, :r], dtype))
        self.A = AdapterBasis(a)
        self.B = AdapterBasis(b)

    def delta(self, x, theta):
        r""":math:`B\operatorname{diag}(\theta) A x` for ``x`` of shape ``(T, in)``."""
        return ((x @ self.A[...].T) * theta[None, :]) @ self.B[...].T


def _dotted(path) -> str:
    return ".".join(str(key) for key in path)


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


class WeightAdapter(Adapter):
    r"""Offset the network's parameters: :math:`w \mapsto w + \theta` (flattened).

    :math:`\theta` is every ``nnx.Param`` of the network (or of the chosen
    modules) as one flat vector, in the order of ``segments``: the parameter
    named ``segments[i][0]`` (a dotted path such as ``"blocks.0.attn.qkv.kernel"``)
    is offset by ``theta[start:start + size].reshape(shape)`` with
    ``(name, start, shape) = segments[i]``. At :math:`\theta = 0` the network is
    the base model exactly. The network is called with the offset parameters (a
    functional copy: the model itself is not changed).

    Args:
        model: the :class:`~kalmanjax.nn.Transformer` it adapts.
        modules: dotted module paths whose parameters :math:`\theta` covers (e.g.
            ``("blocks.2", "head")``); ``None`` (default) covers every parameter.

    Raises:
        ValueError: when ``modules`` names no parameter of the model.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from kalmanjax.nn import Transformer, WeightAdapter, observation_fn
        >>> net = Transformer(output_dim=1, input_dim=3, width=16, depth=1, heads=2,
        ...                   max_len=8, rngs=nnx.Rngs(0))
        >>> adapter = WeightAdapter(net, modules=("head",))
        >>> adapter.dim, [name for name, _, _ in adapter.segments]
        (17, ['head.bias', 'head.kernel'])
        >>> observation_fn(net, adapter)(jnp.zeros(17), jnp.ones((5, 3))).shape
        (5, 1)
    """

    def __init__(self, model, modules: Sequence[str] | None = None):
        """Select the parameters (see the class docstring)."""
        if isinstance(modules, str):
            modules = (modules,)
        self.site = "weights"
        self.modules = None if modules is None else tuple(modules)
        chosen = nnx.split(model, self._selects, ...)[1]
        segments, start = [], 0
        # the order ravel_pytree flattens in (a Variable's leaf ends in ".value")
        for path, value in jax.tree_util.tree_flatten_with_path(chosen)[0]:
            names = [_key_name(key) for key in path]
            shape = tuple(np.shape(value))
            segments.append((".".join(names[:-1]), start, shape))
            start += math.prod(shape)
        if not segments:
            names = sorted(
                {_dotted(p[:-1]) for p, _ in nnx.to_flat_state(nnx.state(model))}
            )
            raise ValueError(
                f"WeightAdapter: modules {self.modules} name no parameter of the "
                f"model; its modules include {names[:8]}"
            )
        self.segments = tuple(segments)
        self.dim = start

    def _selects(self, path, value) -> bool:
        if not isinstance(value, nnx.Param):
            return False
        if self.modules is None:
            return True
        name = _dotted(path)
        return any(name == m or name.startswith(m + ".") for m in self.modules)

    def adapted(self, model, theta: Array):
        """A copy of ``model`` whose chosen parameters are offset by ``theta``."""
        graphdef, chosen, rest = nnx.split(model, self._selects, ...)
        flat, unravel = ravel_pytree(chosen)
        return nnx.merge(graphdef, unravel(flat + theta), rest)
