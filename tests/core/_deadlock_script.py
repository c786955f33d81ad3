"""Run by tests/core/test_batching.py in a subprocess with XLA's default pool."""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import kalmanjax as kj


def main(n, m, T, repeats):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        F = jnp.asarray(0.9 * np.linalg.qr(rng.normal(size=(n, n)))[0])
        H = jnp.asarray(rng.normal(size=(m, n)))
        filt = kj.kalman_filter(
            kj.LinearDynamics(F, 0.1 * jnp.eye(n)), kj.LinearObservation(H, jnp.eye(m))
        )
        prior = kj.Gaussian(jnp.zeros(n), jnp.eye(n))
        ys = jnp.asarray(rng.normal(size=(T, m)))
        fn = jax.jit(lambda ys: kj.run(filt, prior, ys, parallel=True, lean=True))
        seq = kj.log_marginal_likelihood(filt, prior, ys)
        for _ in range(repeats):
            out = jnp.sum(jax.block_until_ready(fn(ys)).infos.log_likelihood)
            np.testing.assert_allclose(out, seq, rtol=1e-9)
    print("ok")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
