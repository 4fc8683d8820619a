"""asv benchmarks of nbopt (see ``asv_bench/README.md``).

Every module here is collected by asv: ``time_*`` methods of classes are
timed, ``timeraw_*`` functions return code that asv times in a fresh
interpreter.  Setups warm up Numba so that compile time is never measured.
"""
