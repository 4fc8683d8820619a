"""``python -m nbopt <command>``: forwards to :mod:`nbopt.cli.main`.

The command-line tools live in the :mod:`nbopt.cli` subpackage; this file stays
a shim so the library's top-level modules are only the library.
"""
import sys

from nbopt.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
