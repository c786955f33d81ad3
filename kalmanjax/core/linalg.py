r"""Linear algebra for the filters, in two interchangeable implementations.

Both implementations expose the same eight operations, so the Kalman steps in
:mod:`kalmanjax.steps` are written once:

* ``matmul(a, b)`` for matrix-matrix and matrix-vector products;
* ``cholesky(a)``: lower Cholesky factor of a positive-definite matrix (both
  implementations read :math:`(A + A^\top)/2`);
* ``solve_lower(l, b)``: :math:`L^{-1} B` for lower-triangular :math:`L`;
* ``solve_lower_t(l, b)``: :math:`L^{-\top} B`;
* ``psd_cholesky(a)``: a lower-triangular factor of a PSD matrix that may be
  singular (``Q = 0`` is common), exact where the Cholesky factor exists;
* ``solve(a, b)``: :math:`A^{-1} B` for a general square :math:`A`;
* ``tria(a)``: a lower-triangular :math:`L` with non-negative diagonal and
  :math:`L L^\top = A A^\top` (``a`` may be wide), by a QR factorisation;
* ``tria_basis(a)``: ``(L, B)``, ``tria``'s factor and the orthonormal rows
  :math:`B` with :math:`A = L B` (a zero row where the pivot is zero).

Derivatives of the factorisations. ``psd_cholesky`` is differentiated through
the covariance it factors, with the Cholesky tangent
:math:`dL = L\,\Phi(L^{-1} dP\, L^{-\top})` (:math:`\Phi` takes the lower
triangle and half the diagonal): exact for a definite matrix, NaN for a singular
one, whose factor has no derivative in general (:math:`d\sqrt p / dp` is infinite
at 0), never a plausible wrong number. :func:`factor_of_sum` factors
:math:`C C^\top + A A^\top` and is differentiated through :math:`C C^\top` itself
(the same tangent, of the sum), so a singular ``Q`` or ``R`` is differentiated
exactly whenever the sum is definite. :func:`gram_factor` is ``tria`` for a
factor that is only used through :math:`L L^\top` (the parallel filter's
element factors): its tangent :math:`dL = dA\, B^\top` satisfies
:math:`dL\,L^\top + L\,dL^\top = d(AA^\top)` but is not triangular, and it
exists for a rank-deficient :math:`A`, where the QR derivative is NaN.

``GENERAL`` uses XLA dots and LAPACK. ``SMALL`` uses only elementwise arithmetic
and reductions, with the factorisations unrolled in Python: at a handful of state
dimensions XLA:CPU time is per-op overhead rather than FLOPs, and elementwise code
fuses into a few kernels where dots and LAPACK calls cannot fuse at all. Its
``tria`` is modified Gram-Schmidt on the rows, whose triangular factor is as
accurate as Householder QR's (Bjorck & Paige 1992); its general ``solve`` (used
only by the parallel filter's combine) is Gauss-Jordan elimination as a loop over
the pivots. ``COMPACT`` is ``SMALL`` with its triangular solves and ``tria`` as
loops over the rows too (:func:`compact`), for the parallel scans' combines, whose
programs repeat them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array

#: State/observation dimensions up to which :data:`SMALL` is chosen automatically.
SMALL_MAX_DIM = 8

#: A covariance counts as positive semi-definite when its smallest eigenvalue is at
#: least ``-PSD_TOLERANCE_EPS * eps * max |eigenvalue|`` (rounding); see
#: :func:`is_psd` (the filters) and :func:`kalmanjax.validate`.
PSD_TOLERANCE_EPS = 100


class LinalgOps(NamedTuple):
    """A linear-algebra implementation (see the module docstring)."""

    matmul: Callable[[Array, Array], Array]
    cholesky: Callable[[Array], Array]
    solve_lower: Callable[[Array, Array], Array]
    solve_lower_t: Callable[[Array, Array], Array]
    tria: Callable[[Array], Array]
    tria_basis: Callable[[Array], tuple[Array, Array]]
    psd_cholesky: Callable[[Array], Array]
    solve: Callable[[Array, Array], Array]


def mT(a: Array) -> Array:  # noqa: N802  (numpy's own name for it)
    """Swap the last two axes (matrix transpose)."""
    return jnp.swapaxes(a, -1, -2)


def symmetrize(a: Array) -> Array:
    r"""Return :math:`(A + A^\top) / 2`."""
    return 0.5 * (a + mT(a))


def logdet_from_chol(chol: Array) -> Array:
    r"""Return :math:`\log\det(L L^\top) = 2 \sum_i \log L_{ii}`."""
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


def is_psd(a: Array) -> Array:
    r"""Whether the symmetric part of ``a`` is positive semi-definite, to rounding.

    True when every entry is finite and the smallest eigenvalue of
    :math:`(A + A^\top)/2` is at least ``-PSD_TOLERANCE_EPS`` :math:`\varepsilon
    \max_i |w_i|`, the tolerance :func:`kalmanjax.validate` uses too (half
    precision is checked in float32). A scalar boolean, not differentiated.
    """
    a = lax.stop_gradient(a)
    if jnp.finfo(a.dtype).bits < 32:
        a = a.astype(jnp.float32)
    finite = jnp.all(jnp.isfinite(a))
    w = jnp.linalg.eigvalsh(symmetrize(jnp.where(finite, a, 0.0)))
    tol = PSD_TOLERANCE_EPS * jnp.finfo(a.dtype).eps * jnp.max(jnp.abs(w))
    return finite & (jnp.min(w) >= -tol)


def nan_unless_psd(a: Array) -> Array:
    """``a`` if it is positive semi-definite (:func:`is_psd`), else all NaN.

    How every form reads a fixed covariance (``Q``, ``R``, the prior's), so that a
    matrix that is not PSD gives NaN on every path instead of a different
    projection per path. A scalar or vector is read as variances (a diagonal
    covariance): it must be finite and non-negative. Gradients pass through
    unchanged.
    """
    if a.ndim < 2:
        v = lax.stop_gradient(a)
        ok = jnp.all(jnp.isfinite(v) & (v >= 0))
    else:
        ok = is_psd(a)
    return jnp.where(ok, a, jnp.nan).astype(a.dtype)


def skip_zero_pivots(chol: Array, b: Array) -> tuple[Array, Array]:
    """``(chol', b')`` whose triangular solve skips the zero pivots of ``chol``.

    A pivot at most ``state * eps`` times the largest is zero: its row and column
    of ``chol`` become the unit vector and its entry of ``b`` zero, so either
    triangular solve sets that unknown to 0 and drops that equation (a generalised
    inverse: exact for right-hand sides in the range of ``chol``). Used where a
    singular covariance is inverted on its range: the smoother's gain with a
    deterministic state component.
    """
    n = chol.shape[-1]
    diag = jnp.abs(jnp.diagonal(chol))
    tol = n * jnp.finfo(chol.dtype).eps * jnp.max(diag)
    zero = diag <= tol
    eye = jnp.eye(n, dtype=chol.dtype)
    chol = jnp.where(zero[None, :] | zero[:, None], eye, chol)
    b = jnp.where(zero[:, None] if b.ndim == 2 else zero, 0.0, b)
    return chol, b


def _chol_tangent(solve_lower, matmul, chol: Array, dcov: Array) -> Array:
    # dL = L Phi(L^-1 dP L^-T): the tangent of the lower factor of P for a tangent
    # dP. A singular factor has no tangent in general (d sqrt(p) / dp = inf at 0):
    # it gives NaN here, never a plausible wrong number.
    x = mT(solve_lower(chol, mT(solve_lower(chol, symmetrize(dcov)))))
    phi = jnp.tril(x, -1) + 0.5 * jnp.diag(jnp.diagonal(x))
    return matmul(chol, phi)


def _psd_differentiated_through_cov(psd_fn, solve_lower, matmul):
    """``psd_fn(a)`` (a factor of PSD ``a``) with the covariance-based tangent."""

    @jax.custom_jvp
    def psd_cholesky(a):
        return psd_fn(a)

    @psd_cholesky.defjvp
    def _(primals, tangents):
        (a,), (da,) = primals, tangents
        chol = psd_fn(a)
        return chol, _chol_tangent(solve_lower, matmul, chol, da)

    return psd_cholesky


# ---------------------------------------------------------------- general (LAPACK)


def _pad_wide(a: Array) -> Array:
    n, k = a.shape
    if k < n:  # pad with zero columns so that the QR is of a tall matrix
        a = jnp.concatenate([a, jnp.zeros((n, n - k), a.dtype)], axis=1)
    return a


def _sign_of_diagonal(r: Array) -> Array:
    return jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(r.dtype)


def _tria_qr(a: Array) -> Array:
    r = jnp.linalg.qr(mT(_pad_wide(a)), mode="r")
    return mT(r) * _sign_of_diagonal(r)[None, :]


def _tria_qr_basis(a: Array) -> tuple[Array, Array]:
    q, r = jnp.linalg.qr(mT(_pad_wide(a)), mode="reduced")
    sign = _sign_of_diagonal(r)
    return mT(r) * sign[None, :], (mT(q) * sign[:, None])[:, : a.shape[1]]


def _psd_cholesky_general(a: Array) -> Array:
    # Cholesky when it exists; else triangularise the symmetric square root from an
    # eigendecomposition (a lax.cond: outside vmap only one branch runs).
    chol = jnp.linalg.cholesky(a)

    def from_eigh(_):
        w, v = jnp.linalg.eigh(symmetrize(a))
        # eigenvalues at rounding level are zero, so a null direction has a zero
        # (not a ~sqrt(eps)) pivot
        tol = a.shape[-1] * jnp.finfo(a.dtype).eps * jnp.max(jnp.abs(w))
        return _tria_qr(v * jnp.sqrt(jnp.where(w > tol, w, 0.0))[None, :])

    # a non-finite input keeps Cholesky's NaN (eigh would hide it)
    keep = jnp.all(jnp.isfinite(chol)) | ~jnp.all(jnp.isfinite(a))
    return lax.cond(keep, lambda _: chol, from_eigh, None)


def _solve_lower_general(chol: Array, b: Array) -> Array:
    return solve_triangular(chol, b, lower=True)


GENERAL = LinalgOps(
    matmul=jnp.matmul,
    cholesky=jnp.linalg.cholesky,
    solve_lower=_solve_lower_general,
    solve_lower_t=lambda chol, b: solve_triangular(chol, b, lower=True, trans="T"),
    tria=_tria_qr,
    tria_basis=_tria_qr_basis,
    psd_cholesky=_psd_differentiated_through_cov(
        _psd_cholesky_general, _solve_lower_general, jnp.matmul
    ),
    solve=jnp.linalg.solve,
)


# ------------------------------------------------------- small (elementwise only)


def _matmul_small(a: Array, b: Array) -> Array:
    if b.ndim == 1:
        return jnp.sum(a * b[None, :], axis=1)
    return jnp.sum(a[:, :, None] * b[None, :, :], axis=1)


def _cholesky_small(a: Array, psd: bool = False) -> Array:
    # Column-by-column Cholesky without pivoting, of (a + a^T) / 2 as LAPACK's path
    # reads it. With ``psd`` a non-positive pivot gives a zero column, which is
    # exact for PSD input (the column below a zero pivot is zero), and a NaN stays
    # NaN; without it a non-positive pivot gives NaN, as LAPACK does.
    a = symmetrize(a)
    n = a.shape[0]
    rows = jnp.arange(n)
    cols = []
    for j in range(n):
        v = a[:, j]
        for k in range(j):
            v = v - cols[k] * cols[k][j]
        if psd:  # (0 * v keeps a NaN input NaN)
            positive = v[j] > 0
            pivot = jnp.sqrt(jnp.where(positive, v[j], 1.0))
            col = jnp.where(rows >= j, jnp.where(positive, v / pivot, 0.0 * v), 0.0)
        else:
            col = jnp.where(rows >= j, v / jnp.sqrt(v[j]), 0.0)
        cols.append(col.astype(a.dtype))
    return jnp.stack(cols, axis=1)


def _solve_lower_small(chol: Array, b: Array) -> Array:
    n = chol.shape[0]
    xs = []
    for i in range(n):
        r = b[i]
        for k in range(i):
            r = r - chol[i, k] * xs[k]
        xs.append(r / chol[i, i])
    return jnp.stack(xs, axis=0)


def _solve_lower_t_small(chol: Array, b: Array) -> Array:
    n = chol.shape[0]
    xs: list = [None] * n
    for i in reversed(range(n)):
        r = b[i]
        for k in range(i + 1, n):
            r = r - chol[k, i] * xs[k]
        xs[i] = r / chol[i, i]
    return jnp.stack(xs, axis=0)


def _tria_mgs_basis(a: Array) -> tuple[Array, Array]:
    # Modified Gram-Schmidt on the rows of a: row i of the result holds the
    # coordinates of a_i in the orthonormal basis built from a_1..a_i.
    n = a.shape[0]
    rows = jnp.arange(n)
    resid = a
    cols, basis = [], []
    for j in range(n):
        sq = jnp.sum(resid[j] * resid[j])
        positive = sq > 0
        norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
        q = resid[j] / jnp.where(positive, norm, 1.0)
        coef = jnp.sum(resid * q[None, :], axis=1)
        coef = jnp.where(rows > j, coef, 0.0)
        resid = resid - coef[:, None] * q[None, :]
        cols.append(jnp.where(rows == j, norm, coef).astype(a.dtype))
        basis.append(q)
    return jnp.stack(cols, axis=1), jnp.stack(basis, axis=0)


def _tria_mgs(a: Array) -> Array:
    return _tria_mgs_basis(a)[0]


def _solve_small(a: Array, b: Array) -> Array:
    # Gauss-Jordan elimination with partial pivoting, a loop over the pivots (one
    # copy of the elimination in the program: this solve sits in the parallel
    # filter's combine, which a scan's program repeats); the row swap is a select
    # against the pivot row, so there is no gather or LAPACK call.
    n = a.shape[0]
    rows = jnp.arange(n)
    vector = b.ndim == 1
    aug = jnp.concatenate([a, b[:, None] if vector else b], axis=1)

    def eliminate(j, aug):
        col = lax.dynamic_index_in_dim(aug, j, axis=1, keepdims=False)
        p = jnp.argmax(jnp.where(rows >= j, jnp.abs(col), -1.0))
        is_p, is_j = rows == p, rows == j
        row_p = jnp.sum(jnp.where(is_p[:, None], aug, 0.0), axis=0)
        row_j = jnp.sum(jnp.where(is_j[:, None], aug, 0.0), axis=0)
        aug = jnp.where(is_j[:, None], row_p[None, :], aug)
        aug = jnp.where((is_p & ~is_j)[:, None], row_j[None, :], aug)
        col = jnp.where(is_j, row_p[j], jnp.where(is_p, row_j[j], col))
        factors = jnp.where(is_j, 0.0, col / row_p[j])
        return aug - factors[:, None] * row_p[None, :]

    aug = lax.fori_loop(0, n, eliminate, aug)
    x = aug[:, n:] / jnp.diagonal(aug[:, :n])[:, None]
    return x[:, 0] if vector else x


SMALL = LinalgOps(
    matmul=_matmul_small,
    cholesky=_cholesky_small,
    solve_lower=_solve_lower_small,
    solve_lower_t=_solve_lower_t_small,
    tria=_tria_mgs,
    tria_basis=_tria_mgs_basis,
    psd_cholesky=_psd_differentiated_through_cov(
        functools.partial(_cholesky_small, psd=True), _solve_lower_small, _matmul_small
    ),
    solve=_solve_small,
)


# ------------------------------------------- compact (elementwise, loops not unrolled)
#
# The same arithmetic as SMALL's triangular solves and modified Gram-Schmidt, as
# loops over the rows/columns (``lax.fori_loop``) instead of unrolled Python: one
# copy of the body in the program. For code that a scan repeats (the parallel
# filter's and smoother's combines), whose program size, hence compile time,
# matters more than a short loop's overhead; rows are picked and written with
# masks, so there is no gather, scatter or LAPACK call.


def _row(x: Array, i) -> Array:
    """``x[i]`` for a traced ``i``, as a masked sum over the leading axis."""
    mask = (jnp.arange(x.shape[0]) == i).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.sum(jnp.where(mask, x, 0), axis=0)


def _set_row(x: Array, i, value: Array) -> Array:
    mask = (jnp.arange(x.shape[0]) == i).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(mask, value[None], x)


def _solve_lower_loop(chol: Array, b: Array) -> Array:
    n = chol.shape[0]

    def body(i, x):  # x holds rows 0..i-1 of the solution, zeros below
        row = _row(chol, i)
        r = _row(b, i) - jnp.tensordot(row, x, axes=1)
        return _set_row(x, i, r / row[i])

    return lax.fori_loop(0, n, body, jnp.zeros_like(b))


def _solve_lower_t_loop(chol: Array, b: Array) -> Array:
    n = chol.shape[0]

    def body(j, x):  # rows n-j..n-1 done: row i = n - 1 - j of L^T is column i of L
        i = n - 1 - j
        col = _row(mT(chol), i)
        r = _row(b, i) - jnp.tensordot(col, x, axes=1)
        return _set_row(x, i, r / col[i])

    return lax.fori_loop(0, n, body, jnp.zeros_like(b))


def _tria_mgs_basis_loop(a: Array) -> tuple[Array, Array]:
    n = a.shape[0]
    rows = jnp.arange(n)

    def body(j, carry):
        resid, factor, basis = carry
        v = _row(resid, j)
        sq = jnp.sum(v * v)
        positive = sq > 0
        norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
        q = v / jnp.where(positive, norm, 1.0)
        coef = jnp.where(rows > j, jnp.sum(resid * q[None, :], axis=1), 0.0)
        resid = resid - coef[:, None] * q[None, :]
        col = jnp.where(rows == j, norm, coef).astype(a.dtype)
        factor = mT(_set_row(mT(factor), j, col))
        return resid, factor, _set_row(basis, j, q)

    zero = jnp.zeros((n, n), a.dtype)
    _, factor, basis = lax.fori_loop(0, n, body, (a, zero, jnp.zeros_like(a)))
    return factor, basis


#: :data:`SMALL` with its triangular solves and ``tria`` as loops (see above).
COMPACT = SMALL._replace(
    solve_lower=_solve_lower_loop,
    solve_lower_t=_solve_lower_t_loop,
    tria=lambda a: _tria_mgs_basis_loop(a)[0],
    tria_basis=_tria_mgs_basis_loop,
)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def factor_of_sum(ops: LinalgOps, a: Array, cov: Array, chol: Array) -> Array:
    r"""The lower-triangular factor :math:`L` of :math:`C C^\top + A A^\top`.

    ``a`` is ``(rows, k)``, ``chol`` (:math:`C`) ``(rows, j)`` and ``cov``
    (:math:`C C^\top`) ``(rows, rows)``. The value is ``ops.tria([chol, a])``;
    the derivative is taken through ``a`` and ``cov`` (the tangent of ``chol`` is
    ignored: it must be a factor of ``cov``), so a singular ``cov`` (a singular
    ``Q`` or ``R``, whose factor has no derivative there) is differentiated
    exactly wherever the sum is definite, and is NaN where it is singular.
    """
    return ops.tria(jnp.concatenate([chol, a], axis=1))


@factor_of_sum.defjvp
def _factor_of_sum_jvp(ops, primals, tangents):
    a, cov, chol = primals
    da, dcov, _ = tangents
    out = factor_of_sum(ops, a, cov, chol)
    dsum = ops.matmul(da, mT(a)) + ops.matmul(a, mT(da)) + dcov
    return out, _chol_tangent(ops.solve_lower, ops.matmul, out, dsum)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def gram_factor(ops: LinalgOps, a: Array) -> Array:
    r"""``ops.tria(a)``, differentiated for use only through :math:`L L^\top`.

    ``a`` is ``(rows, k)``; the result ``(rows, rows)``. With :math:`A = L B`
    (``ops.tria_basis``) the tangent is :math:`dL = dA\, B^\top`, which gives
    :math:`d(L L^\top) = d(A A^\top)` exactly, also where ``a`` is
    rank-deficient (the QR derivative divides by its zero pivots there), but is
    not lower-triangular: use it only where the factor enters products whose
    value depends on :math:`L L^\top` alone, never a triangular solve.
    """
    return ops.tria(a)


@gram_factor.defjvp
def _gram_factor_jvp(ops, primals, tangents):
    (a,), (da,) = primals, tangents
    factor, basis = ops.tria_basis(a)
    return factor, ops.matmul(da, mT(basis))


def choose_ops(fast: bool | None, *dims: int) -> LinalgOps:
    """Pick the implementation for the given static dimensions.

    :data:`SMALL` when ``fast`` is True, or when it is None and all ``dims`` are at
    most :data:`SMALL_MAX_DIM`; else :data:`GENERAL`.
    """
    if fast is None:
        fast = max(dims) <= SMALL_MAX_DIM
    return SMALL if fast else GENERAL


def compact(ops: LinalgOps) -> LinalgOps:
    """:data:`COMPACT` in place of :data:`SMALL`; ``ops`` itself otherwise.

    For code that a scan repeats, where program size matters more than the loops'
    overhead (the parallel scans' combines).
    """
    return COMPACT if ops is SMALL else ops
