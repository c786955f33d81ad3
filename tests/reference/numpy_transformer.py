"""A NumPy float64 forward pass of ``kalmanjax.nn.Transformer`` (real-valued inputs).

Written from the architecture's description (pre-LayerNorm causal blocks, tanh
GELU, learned positions, final LayerNorm, linear head), reading the parameters as a
nested dict of arrays. No JAX here. ``hook(site, h)`` may replace the residual
stream at ``"block{i}"`` / ``"head"``; ``head_input`` is returned for Jacobians.
"""

import numpy as np


def _layer_norm(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _linear(x, p):
    return x @ p["kernel"] + p["bias"]


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def forward(params, inputs, heads, hook=None):
    """Return the outputs ``(T, out)`` and the head's input ``(T, width)``."""
    hook = hook or (lambda site, h: h)
    p = params
    T = inputs.shape[0]
    h = _linear(inputs, p["embed"]) + p["position"][:T]
    for i in sorted(p["blocks"]):
        b = p["blocks"][i]
        h = hook(f"block{i}", h)
        a = _layer_norm(h, b["norm1"])
        q, k, v = np.split(_linear(a, b["attn"]["qkv"]), 3, axis=-1)
        width = h.shape[1]
        hd = width // heads
        out = np.zeros_like(h)
        for j in range(heads):
            sl = slice(j * hd, (j + 1) * hd)
            s = q[:, sl] @ k[:, sl].T / np.sqrt(hd)
            s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
            out[:, sl] = _softmax(s) @ v[:, sl]
        h = h + _linear(out, b["attn"]["out"])
        h = h + _linear(
            _gelu(_linear(_layer_norm(h, b["norm2"]), b["mlp_in"])), b["mlp_out"]
        )
    head_input = hook("head", _layer_norm(h, p["norm"]))
    return _linear(head_input, p["head"]), head_input
