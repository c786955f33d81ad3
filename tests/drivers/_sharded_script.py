"""Run in a subprocess with 8 host devices by tests/drivers/test_distributed.py."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import kalmanjax as kj


def main():
    assert jax.device_count() == 8, jax.devices()
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        ys = rng.normal(size=(16, 50, 2))
        ys[3, 10] = np.nan
        ys = jnp.asarray(ys)
        dyn = kj.LinearDynamics(F=0.9 * jnp.eye(3), Q=0.1 * jnp.eye(3))
        obs = kj.LinearObservation(H=jnp.asarray(rng.normal(size=(2, 3))), R=jnp.eye(2))
        prior = kj.Gaussian(jnp.zeros(3), jnp.eye(3))
        out = {}
        for parallel in (False, True):
            filt = kj.kalman_filter(dyn, obs, form="sqrt")

            def one(y, filt=filt, parallel=parallel):
                res = kj.run(filt, prior, y, parallel=parallel)
                sm = kj.rts_smoother(dyn, res.states, parallel=parallel)
                return jnp.sum(res.infos.log_likelihood), sm.mean

            single = jax.jit(jax.vmap(one))(ys)  # one device
            sharded_fn = jax.jit(kj.batch_map(one))
            sharded = sharded_fn(kj.shard_batch(ys))
            # an argument not placed with shard_batch is resharded (was an
            # in_specs error of shard_map)
            unsharded = sharded_fn(ys)
            devices = {d.id for d in sharded[1].sharding.device_set}
            out[str(parallel)] = dict(
                max_diff_lml=float(jnp.max(jnp.abs(sharded[0] - single[0]))),
                max_diff_smoothed=float(jnp.max(jnp.abs(sharded[1] - single[1]))),
                max_diff_unsharded=float(jnp.max(jnp.abs(unsharded[0] - single[0]))),
                devices=len(devices),
                shard_shape=list(sharded[1].addressable_shards[0].data.shape),
            )
        try:
            kj.batch_map(one)(ys[:3])
        except ValueError as err:
            out["error"] = str(err)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
