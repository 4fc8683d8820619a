"""A torch training loop with nbopt's optimizer: ``nbopt.torch``.

    pip install torch
    python examples/torch_bridge.py

The model, autograd and the scheduler are torch's; only the optimizer line
changes (``torch.optim.AdamW`` -> ``nbopt.torch.AdamW``).  The parameters are
shared with nbopt without a copy and each ``p.grad`` is read at step time.
The same loop with torch.optim.AdamW gives the same losses.
"""
import time

import torch

import nbopt.torch


def train(make_optimizer, steps=200):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 10))
    data = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 8, 8, generator=data)
    y = torch.randint(0, 10, (64,), generator=data)
    opt = make_optimizer(model.parameters())
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=steps)
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        losses.append(loss.item())
    return losses, time.perf_counter() - start


def main() -> None:
    ours, t_ours = train(lambda params: nbopt.torch.AdamW(params, lr=1e-3))
    theirs, t_theirs = train(lambda params: torch.optim.AdamW(params, lr=1e-3))
    print(f"nbopt.torch.AdamW: loss {ours[0]:.4f} -> {ours[-1]:.4f} ({t_ours:.2f} s, "
          "first step compiles)")
    print(f"torch.optim.AdamW: loss {theirs[0]:.4f} -> {theirs[-1]:.4f} ({t_theirs:.2f} s)")
    diff = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs))
    print(f"largest relative difference of the losses: {diff:.1e}")


if __name__ == "__main__":
    main()
