"""The blocked prefix scan against a sequential NumPy reference and lax's tree scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kalmanjax.core.scan import default_num_blocks, prefix_scan, scan_method


def _compose(earlier, later):
    """Affine maps x -> A x + c, the later applied after the earlier (batched)."""
    (A1, c1), (A2, c2) = earlier, later
    return A2 @ A1, (A2 @ c1[..., None])[..., 0] + c2


def _numpy_scan(A, c, reverse=False):
    order = range(len(A) - 1, -1, -1) if reverse else range(len(A))
    outA, outc = np.empty_like(A), np.empty_like(c)
    accA, accc = None, None
    for t in order:
        if accA is None:
            accA, accc = A[t], c[t]
        else:  # the scan's running combine, in its own order
            accA, accc = A[t] @ accA, A[t] @ accc + c[t]
        outA[t], outc[t] = accA, accc
    return outA, outc


def _maps(rng, T, n=3):
    return rng.normal(size=(T, n, n)) * 0.6, rng.normal(size=(T, n))


@pytest.mark.parametrize("T", [1, 2, 7, 33, 250])
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_a_sequential_numpy_scan(T, reverse, x64):
    rng = np.random.default_rng(T)
    A, c = _maps(rng, T)
    refA, refc = _numpy_scan(A, c, reverse)
    # the default (about sqrt T: one pass over few blocks), 1, 3, and T // 2 or T
    # blocks (more blocks than elements in a block: the doubling over blocks)
    for blocks in sorted({None, 1, 3, max(1, T // 2), T}, key=str):
        outA, outc = prefix_scan(
            _compose,
            (jnp.asarray(A), jnp.asarray(c)),
            reverse=reverse,
            num_blocks=blocks,
        )
        np.testing.assert_allclose(outA, refA, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(outc, refc, rtol=1e-10, atol=1e-12)


def test_equals_the_tree_scan_and_keeps_the_dtype():
    rng = np.random.default_rng(0)
    A, c = (jnp.asarray(x, jnp.float32) for x in _maps(rng, 100))
    for reverse in (False, True):
        blocked = prefix_scan(_compose, (A, c), reverse=reverse)
        tree = prefix_scan(_compose, (A, c), reverse=reverse, method="tree")
        assert blocked[0].dtype == jnp.float32
        np.testing.assert_allclose(blocked[1], tree[1], rtol=2e-4, atol=1e-4)


def test_gradients_match_the_reference_loop(x64):
    rng = np.random.default_rng(1)
    A, c = (jnp.asarray(x) for x in _maps(rng, 40))
    w = jnp.asarray(rng.normal(size=c.shape))

    def loop(A, c):  # the reference, a Python loop of the same combine
        accA, accc, total = A[0], c[0], jnp.vdot(w[0], c[0])
        for t in range(1, len(A)):
            accA, accc = A[t] @ accA, A[t] @ accc + c[t]
            total = total + jnp.vdot(w[t], accc) + 0.1 * jnp.sum(accA)
        return total + 0.1 * jnp.sum(A[0])

    def blocked(A, c, blocks):
        outA, outc = prefix_scan(_compose, (A, c), num_blocks=blocks)
        return jnp.vdot(w, outc) + 0.1 * jnp.sum(outA)

    expected = jax.grad(loop, (0, 1))(A, c)
    for blocks in (6, 20):  # one pass over the blocks; doubling over them
        found = jax.grad(blocked, (0, 1))(A, c, blocks)
        for ref, got in zip(expected, found, strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def _program_size(method, T, blocks=None):
    A, c = jnp.zeros((T, 2, 2)), jnp.zeros((T, 2))
    jaxpr = jax.make_jaxpr(
        lambda e: prefix_scan(_compose, e, method=method, num_blocks=blocks)
    )((A, c))
    return len(jaxpr.jaxpr.eqns)


@pytest.mark.parametrize("per_block", [None, 16])
def test_the_blocked_program_does_not_grow_with_the_length(per_block):
    # the tree inlines its combine about 2 log2 T times; the blocked scan twice
    # (about sqrt T blocks, the CPU default) or three times (blocks of 16, the
    # accelerators' default). Lengths that need padding get a few more equations.
    def size(T):
        return _program_size("blocked", T, per_block and T // per_block)

    exact = {T: size(T) for T in (4096, 65_536, 1_000_000)}
    padded = {T: size(T) for T in (1000, 99_999)}
    assert len(set(exact.values())) == 1, exact
    assert len(set(padded.values())) == 1, padded
    tree = {T: _program_size("tree", T) for T in (64, 4096)}
    assert tree[4096] > 1.5 * tree[64], tree
    assert exact[4096] < tree[4096]


def test_default_blocks_and_the_parallel_argument():
    assert default_num_blocks(10_000, "cpu") == 100
    assert default_num_blocks(10_000, "gpu") == 625
    assert default_num_blocks(1, "cpu") == default_num_blocks(1, "gpu") == 1
    assert scan_method(True) == "blocked" and scan_method("tree") == "tree"
    with pytest.raises(ValueError, match="parallel must be False, True or one of"):
        scan_method("fast")


def test_bad_arguments_are_named():
    x = jnp.zeros(5)
    with pytest.raises((ValueError, TypeError), match="linear"):
        prefix_scan(jnp.add, x, method="linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same leading axis"):
        prefix_scan(lambda a, b: a, (jnp.zeros(5), jnp.zeros(4)))
    with pytest.raises(ValueError, match="num_blocks must be >= 1"):
        prefix_scan(jnp.add, x, num_blocks=0)
