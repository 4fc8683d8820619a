"""Gradients from JAX (CPU), steps from nbopt: a small MLP regression.

    pip install jax
    python examples/jax_regression.py

``jax.grad`` returns JAX arrays; ``np.asarray`` views them as NumPy arrays
(on the CPU, without a copy when the layout allows), which nbopt steps in
place.  The parameters stay NumPy arrays (nbopt.Parameter) throughout.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import nbopt  # noqa: E402

jax.config.update("jax_enable_x64", False)


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (256, 1)).astype(np.float32)
    y = np.sin(2 * x).astype(np.float32)

    def loss(params, x, y):
        w1, b1, w2, b2 = params
        h = jnp.tanh(x @ w1 + b1)
        return jnp.mean((h @ w2 + b2 - y) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss))

    shapes = [(1, 32), (32,), (32, 1), (1,)]
    params = [nbopt.Parameter((0.5 * rng.standard_normal(s)).astype(np.float32))
              for s in shapes]
    opt = nbopt.AdamW(params, lr=0.02, weight_decay=1e-4)
    first = None
    for step in range(300):
        opt.zero_grad()
        value, grads = value_and_grad([p.numpy() for p in params], x, y)
        first = float(value) if first is None else first
        for p, g in zip(params, grads):
            p.grad = np.asarray(g)                    # JAX array -> NumPy gradient
        opt.step()
    last = float(loss([p.numpy() for p in params], x, y))
    print(f"jax + nbopt.AdamW: loss {first:.4f} -> {last:.4f}")


if __name__ == "__main__":
    main()
