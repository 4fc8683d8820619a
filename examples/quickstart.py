"""Fit a small linear model with nbopt.Adam, checkpoint it, and resume.

    python examples/quickstart.py
"""
import os
import tempfile

import numpy as np

import nbopt


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 3)).astype(np.float32)
    true_w = np.array([1.0, -2.0, 0.5], np.float32)
    y = x @ true_w + 0.3

    w = nbopt.Parameter(np.zeros(3, np.float32))
    b = nbopt.Parameter(np.zeros(1, np.float32))
    opt = nbopt.Adam([{"params": [w]}, {"params": [b], "lr": 0.1}], lr=0.05)

    def loss_and_grads():
        err = x @ w + b - y
        w.grad = (2 * x.T @ err / len(x)).astype(np.float32)
        b.grad = np.array([2 * err.mean()], np.float32)
        return float(np.mean(err ** 2))

    for step in range(300):
        opt.zero_grad()
        loss = loss_and_grads()
        opt.step()
        if step % 100 == 0:
            print(f"step {step:3d}  loss {loss:.6f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ckpt.npz")
        nbopt.save(opt.state_dict(), path)
        opt.load_state_dict(nbopt.load(path))
    print(f"final loss {loss_and_grads():.2e}")
    print("w =", np.round(w, 3), "(true", true_w, ")  b =", np.round(b, 3), "(true 0.3)")


if __name__ == "__main__":
    main()
