r"""Prefix scans with an associative combine, in a program that does not grow with T.

``lax.associative_scan`` inlines its combine about :math:`2\log_2 T` times, so its
compiled program, and its compile time, grow with the length. :func:`prefix_scan`
computes the same inclusive scan with the combine appearing two or three times in
the program, whatever ``T`` (a blocked scheme, after Blelloch):

1. split the ``T`` elements into ``B`` blocks of ``L = ceil(T / B)`` (the last
   element repeated as padding: a prefix never depends on later elements) and
   scan every block sequentially, all blocks at once (a ``lax.scan`` of ``L``
   steps over a batch of ``B``);
2. bring in the earlier blocks:

   * ``B <= L`` (few blocks): a ``lax.scan`` over the blocks in order, carrying
     the total so far, combines it with all ``L`` results of the next block at
     once (the last of them is the next total). Span :math:`O(L + B)`, work
     :math:`2T` combines, the combine twice in the program.
   * ``B > L``: the block totals are scanned by Hillis-Steele doubling (a
     ``lax.scan`` over :math:`\lceil\log_2 B\rceil` levels, one batched combine
     each), then one batched combine gives every element its prefix. Span
     :math:`O(L + \log B)`, work :math:`O(T + B \log B)`, three combines.

The default ``B`` is about :math:`\sqrt T` on CPU, where the work is what counts
(the tree's is about :math:`2T` too), and ``T / 16`` on accelerators, where the
span is.

``fn(earlier, later)`` combines two stacks of elements (a leading batch axis on
every leaf), as for ``lax.associative_scan``; ``reverse=True`` scans from the end
with the same convention as ``lax.associative_scan(..., reverse=True)``: the order
is flipped, so ``fn`` receives the later-in-time element first.

Examples:
    >>> import jax.numpy as jnp
    >>> from kalmanjax.core.scan import prefix_scan
    >>> prefix_scan(lambda a, b: a + b, jnp.arange(1.0, 8.0), num_blocks=3)
    Array([ 1.,  3.,  6., 10., 15., 21., 28.], dtype=float32)
    >>> prefix_scan(lambda a, b: a + b, jnp.arange(1.0, 5.0), reverse=True)
    Array([10.,  9.,  7.,  4.], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "SCAN_METHODS",
    "Parallel",
    "default_num_blocks",
    "prefix_scan",
    "scan_method",
]

#: the ways :func:`prefix_scan` can run: ``"blocked"`` (a program whose size does
#: not depend on ``T``) or ``"tree"`` (``lax.associative_scan``)
SCAN_METHODS = ("blocked", "tree")

ScanMethod = Literal["blocked", "tree"]

#: what the drivers' ``parallel=`` takes: ``False`` (sequential), ``True`` (the
#: parallel scan, ``"blocked"``), or a method of :data:`SCAN_METHODS` by name
Parallel = bool | ScanMethod


def scan_method(parallel: bool | str) -> ScanMethod:
    """The scan a driver's ``parallel=`` asks for (``True`` is ``"blocked"``).

    Raises:
        ValueError: ``parallel`` is a string not in :data:`SCAN_METHODS`.
    """
    if isinstance(parallel, str):
        if parallel in SCAN_METHODS:
            return parallel  # type: ignore[return-value]
    elif parallel:  # True, np.True_, 1: what ``if parallel:`` accepted before
        return "blocked"
    raise ValueError(
        f"parallel must be False, True or one of {SCAN_METHODS}, got {parallel!r}"
    )


def default_num_blocks(length: int, backend: str | None = None) -> int:
    r"""The number of blocks :func:`prefix_scan` uses for ``length`` elements.

    About :math:`\sqrt T` on CPU (the least work), ``T / 16`` elsewhere (a short
    span); at least 1 and at most ``length``.
    """
    backend = jax.default_backend() if backend is None else backend
    if backend == "cpu":
        blocks = math.isqrt(max(length, 1))
    else:
        blocks = -(-length // 16)
    return max(1, min(length, blocks))


def _tree_map(f, *trees):
    return jax.tree_util.tree_map(f, *trees)


def prefix_scan(
    fn: Callable[[Any, Any], Any],
    elems: Any,
    *,
    reverse: bool = False,
    method: ScanMethod = "blocked",
    num_blocks: int | None = None,
) -> Any:
    """The inclusive scan of ``elems`` under the associative ``fn``.

    Args:
        fn: ``fn(earlier, later) -> combined``, on stacks of elements (every leaf
            with a leading batch axis), associative.
        elems: a pytree of arrays with a common leading axis ``T``.
        reverse: scan from the end (as ``lax.associative_scan(reverse=True)``).
        method: ``"blocked"`` (the default; see the module docstring) or
            ``"tree"`` (``lax.associative_scan`` itself).
        num_blocks: ``B`` for ``"blocked"`` (default :func:`default_num_blocks`).

    Returns:
        A pytree like ``elems``: element ``t`` combines elements ``0..t`` (or
        ``t..T-1`` with ``reverse=True``).
    """
    if method not in SCAN_METHODS:
        raise ValueError(
            f"prefix_scan: method must be one of {SCAN_METHODS}, got {method!r}"
        )
    leaves = jax.tree_util.tree_leaves(elems)
    if not leaves:
        return elems
    length = leaves[0].shape[0]
    if any(leaf.shape[:1] != (length,) for leaf in leaves):
        shapes = [leaf.shape for leaf in leaves]
        raise ValueError(
            f"prefix_scan: every leaf of elems needs the same leading axis; got "
            f"shapes {shapes}"
        )
    if method == "tree" or length <= 1:
        return lax.associative_scan(fn, elems, reverse=reverse)
    blocks = default_num_blocks(length) if num_blocks is None else int(num_blocks)
    if not 1 <= blocks:
        raise ValueError(f"prefix_scan: num_blocks must be >= 1, got {num_blocks}")
    blocks = min(blocks, length)
    if reverse:
        flipped = _tree_map(lambda x: jnp.flip(x, 0), elems)
        out = _blocked(fn, flipped, length, blocks)
        return _tree_map(lambda x: jnp.flip(x, 0), out)
    return _blocked(fn, elems, length, blocks)


def _blocked(fn, elems, length: int, blocks: int):
    size = -(-length // blocks)  # L, the block length
    blocks = -(-length // size)  # no empty block
    pad = blocks * size - length

    def to_blocks(x):  # (T, ...) -> (L, B, ...): block b holds x[b L : (b + 1) L]
        if pad:
            x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)
        return jnp.swapaxes(x.reshape((blocks, size) + x.shape[1:]), 0, 1)

    stacked = _tree_map(to_blocks, elems)

    # 1. every block scanned sequentially, all blocks at once
    def in_block(carry, later):
        combined = fn(carry, later)
        return combined, combined

    first = _tree_map(lambda x: x[0], stacked)
    rest = _tree_map(lambda x: x[1:], stacked)
    _, scanned = lax.scan(in_block, first, rest)
    local = _tree_map(lambda a, b: jnp.concatenate([a[None], b], 0), first, scanned)

    if 1 < blocks <= size:
        # 2. (few blocks) one pass over the blocks in order, carrying the total so
        # far: block b's elements combined with it, its last one the next total
        def across(total, block):  # (...), (L, ...) -> (...), (L, ...)
            tiled = _tree_map(
                lambda t, x: jnp.broadcast_to(t[None], x.shape), total, block
            )
            fixed = fn(tiled, block)
            return _tree_map(lambda x: x[-1], fixed), fixed

        by_block = _tree_map(lambda x: jnp.swapaxes(x, 0, 1), local)  # (B, L, ...)
        head = _tree_map(lambda x: x[0], by_block)
        _, tail = lax.scan(
            across,
            _tree_map(lambda x: x[-1], head),
            _tree_map(lambda x: x[1:], by_block),
        )
        local = _tree_map(
            lambda h, t: jnp.swapaxes(jnp.concatenate([h[None], t], 0), 0, 1),
            head,
            tail,
        )
    elif blocks > 1:
        # 2. (many blocks) the block totals, scanned by doubling: one combine per
        # level
        totals = _tree_map(lambda x: x[-1], local)
        position = jnp.arange(blocks)
        levels = math.ceil(math.log2(blocks))
        offsets = 2 ** jnp.arange(levels)

        def level(acc, offset):
            shifted = _tree_map(lambda x: jnp.roll(x, offset, axis=0), acc)
            combined = fn(shifted, acc)  # wrapped-around rows are discarded
            keep = position >= offset

            def select(new, old):
                mask = keep.reshape(keep.shape + (1,) * (new.ndim - 1))
                return jnp.where(mask, new, old)

            return _tree_map(select, combined, acc), None

        totals, _ = lax.scan(level, totals, offsets)

        # 3. blocks 1.. get the total of the blocks before them
        def fix(x_prefix, x_local):  # (B - 1, ...), (L, B - 1, ...) -> flat
            tiled = jnp.broadcast_to(x_prefix[None], x_local.shape)
            return tiled.reshape((-1,) + x_local.shape[2:])

        prefix = _tree_map(lambda x: x[:-1], totals)
        later = _tree_map(lambda x: x[:, 1:], local)
        flat_prefix = _tree_map(fix, prefix, later)
        flat_later = _tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), later)
        fixed = fn(flat_prefix, flat_later)
        fixed = _tree_map(
            lambda f, x: f.reshape(x.shape), fixed, later
        )  # back to (L, B - 1, ...)
        local = _tree_map(
            lambda head, tail: jnp.concatenate([head[:, :1], tail], axis=1),
            local,
            fixed,
        )

    # (L, B, ...) -> (T, ...)
    def from_blocks(x):
        x = jnp.swapaxes(x, 0, 1)
        return x.reshape((blocks * size,) + x.shape[2:])[:length]

    return _tree_map(from_blocks, local)
