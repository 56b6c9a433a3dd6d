"""With several pytest-xdist workers sharing the machine, each worker (and every process it starts) computes on one CPU
thread: OpenMP threads that outnumber the cores slow every process down several-fold."""
import os

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"): os.environ.setdefault(var, "1")
