"""nbopt's command-line tools (``python -m nbopt <command>``).

They live apart from the library's modules: nothing in ``nbopt`` imports this
package, so ``import nbopt`` never pays for argparse, the demo's model or the
benchmark harness.  ``nbopt/__main__.py`` only forwards to :func:`nbopt.cli.main.main`.
"""
