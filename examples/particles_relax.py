"""A simulation that optimises inside its own Numba code: particles in a
harmonic trap, repelling each other, relax to their minimum-energy
arrangement under Adam.

The whole relaxation -- forces, Adam step, energy -- is one ``@njit``
function calling ``nbopt.functional.adam_step``; no Python runs between
steps.  The same relaxation with the forces still compiled but the step taken
by ``nbopt.Adam.step()`` from Python (and by ``torch.optim.Adam``, when torch
is installed) reaches the same positions -- bit for bit for nbopt's two APIs
-- and the script prints the time per step of each.

    python examples/particles_relax.py [--particles 64] [--steps 2000] [--quick]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit

import nbopt
from nbopt.functional import adam_init, adam_step

TRAP = 1.0          # harmonic trap stiffness
REPULSION = 0.05    # pair repulsion strength
SOFTENING = 0.01    # keeps the pair energy finite at contact


@njit(cache=True)
def energy_and_gradient(pos, grad):
    """E = TRAP/2 sum |x_i|^2 + REPULSION sum_{i<j} 1 / (|x_i - x_j|^2 + SOFTENING);
    writes dE/dpos into ``grad`` and returns E."""
    n = pos.shape[0]
    energy = 0.0
    for i in range(n):
        grad[i, 0] = TRAP * pos[i, 0]
        grad[i, 1] = TRAP * pos[i, 1]
        energy += 0.5 * TRAP * (pos[i, 0] ** 2 + pos[i, 1] ** 2)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = pos[i, 0] - pos[j, 0], pos[i, 1] - pos[j, 1]
            inv = 1.0 / (dx * dx + dy * dy + SOFTENING)
            energy += REPULSION * inv
            # d/dx_i of inv = -2 dx inv^2
            fx, fy = -2.0 * REPULSION * dx * inv * inv, -2.0 * REPULSION * dy * inv * inv
            grad[i, 0] += fx
            grad[i, 1] += fy
            grad[j, 0] -= fx
            grad[j, 1] -= fy
    return energy


@njit(cache=True)
def relax_in_njit(pos, steps, lr):
    """The whole relaxation in compiled code: returns the energy trace."""
    state = adam_init(pos)
    grad = np.empty_like(pos)
    trace = np.empty(steps)
    for k in range(steps):
        trace[k] = energy_and_gradient(pos, grad)
        adam_step(pos, grad, state, lr)
    return trace


def relax_with_class(pos, steps, lr):
    """Forces compiled, the step taken from Python by nbopt.Adam."""
    p = nbopt.Parameter(pos)
    opt = nbopt.Adam([p], lr=lr)
    grad = np.empty_like(pos)
    for _ in range(steps):
        energy_and_gradient(p, grad)
        p.grad = grad
        opt.step()
    return np.asarray(p)


def relax_with_torch(pos, steps, lr):
    import torch

    p = torch.nn.Parameter(torch.from_numpy(pos))
    opt = torch.optim.Adam([p], lr=lr)
    grad = np.empty_like(pos)
    for _ in range(steps):
        energy_and_gradient(p.detach().numpy(), grad)
        p.grad = torch.from_numpy(grad)
        opt.step()
    return p.detach().numpy()


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--quick", action="store_true", help="16 particles, 200 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.particles, args.steps = 16, 200
    start = np.random.default_rng(0).uniform(-1, 1, (args.particles, 2))

    # compile first (cached on disk afterwards): the timings are of the loops
    relax_in_njit(start.copy(), 2, args.lr)
    relax_with_class(start.copy(), 2, args.lr)

    pos_njit = start.copy()
    trace, t_njit = _timed(relax_in_njit, pos_njit, args.steps, args.lr)
    pos_class, t_class = _timed(relax_with_class, start.copy(), args.steps, args.lr)
    print(f"{args.particles} particles, {args.steps} Adam steps (lr={args.lr})")
    print(f"energy {trace[0]:.6f} -> {trace[-1]:.6f}; "
          f"radius of the cloud {np.sqrt((pos_njit ** 2).sum(1)).max():.4f}")
    same = np.array_equal(pos_njit, pos_class)
    print(f"inside njit (nbopt.functional.adam_step): {t_njit / args.steps * 1e6:8.2f} us/step")
    print(f"opt.step() from Python (nbopt.Adam):      {t_class / args.steps * 1e6:8.2f} us/step"
          f"   same positions bit for bit: {same}")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch.optim.Adam: torch is not installed")
    else:
        relax_with_torch(start.copy(), 2, args.lr)
        pos_torch, t_torch = _timed(relax_with_torch, start.copy(), args.steps, args.lr)
        print(f"opt.step() from Python (torch.optim.Adam): {t_torch / args.steps * 1e6:7.2f} us/step"
              f"   max |difference| {np.abs(pos_torch - pos_njit).max():.2e}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
