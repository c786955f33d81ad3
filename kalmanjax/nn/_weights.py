"""Weights of the shipped networks as flax msgpack (no pickle), with their config."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

Config = TypeVar("Config")


def save_weights(model: nnx.Module, config: Any, path: str | Path, **meta) -> None:
    """Write the parameters, the config (a NamedTuple) and ``meta`` to ``path``."""
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    state = jax.tree_util.tree_map(np.asarray, state)
    payload = {"config": json.dumps({**config._asdict(), **meta}), "params": state}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(serialization.msgpack_serialize(payload))


def load_weights(
    path: str | Path,
    config_type: type[Config],
    build: Callable[[Config], nnx.Module],
) -> tuple[Any, Config, dict]:
    """Read weights written by :func:`save_weights`: ``(model, config, meta)``."""
    payload = serialization.msgpack_restore(Path(path).read_bytes())
    raw = json.loads(str(payload["config"]))
    fields = config_type._fields  # pyright: ignore[reportAttributeAccessIssue]
    # fields added since the file was written take the config's defaults
    config = config_type(**{k: raw[k] for k in fields if k in raw})
    meta = {k: v for k, v in raw.items() if k not in fields}
    # build the structure abstractly (no eager random initialisation), then fill it
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build(config)))
    params = jax.tree_util.tree_map(jnp.asarray, _int_keys(payload["params"]))
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state), config, meta


def _int_keys(tree):
    """Msgpack turns the integer keys of ``nnx.List`` entries into strings."""
    if isinstance(tree, dict):
        return {
            (int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v)
            for k, v in tree.items()
        }
    return tree
