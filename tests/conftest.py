"""With several pytest-xdist workers sharing the machine, each worker (and every process it starts) computes on one CPU
thread: OpenMP threads that outnumber the cores slow every process down several-fold."""
import os

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"): os.environ.setdefault(var, "1")


# the longest tests (minutes each on 2 cores) first: two workers finish together only if no long test starts last
LONGEST_FIRST = ("test_notebook[02_train]", "test_notebook[02e_fine_tuning]", "test_user_files.py", "test_notebook[04_evaluate]",
                 "test_notebook[01_model]", "test_notebook[03_sample]", "test_same_runs.py")

def pytest_collection_modifyitems(items):
    "Run `LONGEST_FIRST` before the rest, in that order; the others keep their order."
    rank = lambda item: next((k for k, name in enumerate(LONGEST_FIRST) if name in item.nodeid), len(LONGEST_FIRST))
    items.sort(key=rank)
