"""Test configuration: strict numerics, the jit variant and the dtype fixture.

Config is set here (the tests' process), never in the library.
"""

import gc
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

# A persistent compilation cache (set by .ci/run) gets one folder per xdist worker:
# with no size limit jax writes entries without a lock, so one worker can read
# another's half-written entry, and the warning that follows fails the test under
# filterwarnings = error. The CLI and notebook subprocesses inherit the folder.
_cache, _worker = (
    os.environ.get("JAX_COMPILATION_CACHE_DIR"),
    os.environ.get("PYTEST_XDIST_WORKER"),
)
if _cache and _worker:
    _cache = os.path.join(_cache, _worker)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    jax.config.update("jax_compilation_cache_dir", _cache)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Drop jax's compiled executables after each test module.

    An xdist worker runs hundreds of modules in one process, and jax keeps every
    executable it compiled: a worker grew past 5 GiB in 20 minutes, and the two
    workers of a 24 GiB CI machine once crashed together.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(params=["without_jit", "with_jit"])
def variant(request):
    """Run a function as it is, or under ``jax.jit``."""
    return (lambda f, **kw: f) if request.param == "without_jit" else jax.jit


@pytest.fixture
def x64():
    """Scoped float64 (never a global toggle)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    if request.param == "float64":
        with jax.enable_x64(True):
            yield jnp.float64
    else:
        yield jnp.float32


@pytest.fixture
def rng():
    return np.random.default_rng(0)
