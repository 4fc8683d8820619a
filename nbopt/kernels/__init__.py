"""Compiled update rules, one module per algorithm.

Each module holds the per-element maths as a plain Python function (the one
source of the algorithm's arithmetic), the segment loop that Numba compiles
for the CPU, the host-side scalar function and the registry entry.  Modules
are imported lazily by :func:`nbopt.registry.get`, so ``import nbopt``
compiles nothing.
"""
