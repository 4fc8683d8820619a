"""Gradients from HIPS autograd, steps from nbopt: logistic regression.

    pip install autograd
    python examples/autograd_logistic.py

autograd differentiates a plain NumPy loss; its gradients are NumPy arrays,
assigned to ``param.grad`` as any other gradient.
"""
import autograd.numpy as anp
import numpy as np
from autograd import grad

import nbopt


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 5))
    true_w = np.array([1.5, -2.0, 0.0, 0.5, 1.0])
    y = (x @ true_w + 0.1 * rng.standard_normal(512) > 0).astype(np.float64)

    def loss(w, b):
        logits = anp.dot(x, w) + b
        return anp.mean(anp.logaddexp(0.0, logits) - y * logits)

    dloss = grad(loss, argnum=(0, 1))

    w = nbopt.Parameter(np.zeros(5))
    b = nbopt.Parameter(np.zeros(1))
    opt = nbopt.Adam([w, b], lr=0.1)
    sched = nbopt.lr_scheduler.CosineAnnealingLR(opt, T_max=200)
    first = loss(w.numpy(), b.numpy())
    for _ in range(200):
        opt.zero_grad()
        w.grad, b.grad = dloss(w.numpy(), b.numpy())      # autograd's NumPy gradients
        opt.step()
        sched.step()
    last = loss(w.numpy(), b.numpy())
    accuracy = np.mean((x @ w + b > 0) == y)
    print(f"autograd + nbopt.Adam: loss {first:.4f} -> {last:.4f}, accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
