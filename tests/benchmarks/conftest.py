"""The benchmark smoke tests: each runs one script's ``main`` in ``--quick`` mode.

JSON numbers are finite (the writer maps NaN to null and infinities to strings),
so a plain ``x > 0`` on a value read back also rejects NaN and infinity.
"""

import json

import pytest

from benchmarks import _harness as H


@pytest.fixture
def quick_run(tmp_path):
    """``run(module, *args)``: ``module.main(["--quick", "--out", tmp, *args])``;
    checks the one file written (its name, the schema, that it is complete and is
    the returned payload) and returns the payload read back."""

    def run(module, *args):
        payload = module.main(["--quick", "--out", str(tmp_path), *args])
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == [f"{module.BENCHMARK}_{H.device_slug()}.json"]
        data = json.loads((tmp_path / files[0]).read_text())
        H.validate(data)
        assert data == json.loads(json.dumps(H.jsonable(payload)))
        assert data["benchmark"] == module.BENCHMARK
        assert data["complete"] is True
        assert data["settings"]["quick"] is True
        env = data["environment"]
        assert set(env["env_vars"]) >= {"NPROC", "XLA_FLAGS"}
        assert "loadavg_end" in env
        assert env["x64"] is False  # float64 is scoped, never a global switch
        return data

    return run
