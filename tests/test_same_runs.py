"""The library's layout may change; what a run produces may not.

A 6-step `t2i-train` run, and the same run resumed for two more steps, made by the code at `REFERENCE` (exported
with `git archive`) and by the working tree give the same files, the same weights bit for bit, the same losses and
the same sample pixels; a file added since (`ADDED_SINCE`) is the only difference allowed. Move `REFERENCE` forward
only with a change that is meant to alter what a run produces.
"""
import csv, json, os, subprocess, sys, tarfile, io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from text2imagegen.train_config import current_names

# one worker runs this file: its module fixtures are built once (pytest-xdist, `--dist loadgroup`)
pytestmark = pytest.mark.xdist_group("test_same_runs")

REPO = Path(__file__).resolve().parents[1]
REFERENCE = "ddc9af3"  # grid captions set in DejaVu Sans: every grid's caption pixels moved there
ADDED_SINCE = set()  # files a run writes today that it did not write at REFERENCE
FIELDS_SINCE = {"channels_last", "compile_unet"}  # config fields added since REFERENCE
ARGS = ["--shapes-pool", "32", "--val-size", "4", "--batch-size", "4", "--max-steps", "6", "--warmup-steps", "2",
        "--val-every", "3", "--checkpoint-every", "2", "--keep-checkpoints", "2", "--val-seeds", "0", "--sample-steps", "2",
        "--num-threads", "1", "--max-minutes", "0", "--probe-per-category", "2"]


def reference_tree(dest:Path) -> Path:
    "The package as it was at REFERENCE, unpacked under `dest`."
    got = subprocess.run(["git", "-C", str(REPO), "archive", REFERENCE, "text2imagegen"], capture_output=True)
    assert got.returncode == 0, f"git archive {REFERENCE} failed (a clone without history?): {got.stderr.decode()[-500:]}"
    tarfile.open(fileobj=io.BytesIO(got.stdout)).extractall(dest, filter="data")
    return dest


def t2i_train(code:Path, out:Path, cache:Path, *extra):
    "Run `python -m text2imagegen.train` with the package at `code` first on the path."
    env = {**os.environ, "PYTHONPATH": str(code), "IN_TEST": "1"}
    p = subprocess.run([sys.executable, "-m", "text2imagegen.train", *ARGS, "--output-dir", str(out), "--cache-dir", str(cache), *extra],
                       capture_output=True, text=True, env=env, cwd=out.parent, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def run_files(run:Path) -> set: return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and p.name != "lock"}

def losses(run:Path) -> list:
    with open(run/"log.csv") as f: return [(r["step"], r["loss"], r["val_loss"]) for r in csv.DictReader(f)]

def weights(run:Path) -> dict:
    return {str(p.relative_to(run)): load_file(p) for p in sorted((run/"model").rglob("*.safetensors"))}

def pixels(run:Path) -> dict: return {p.name: np.asarray(Image.open(p)) for p in sorted((run/"samples").glob("*.png"))}

def config(run:Path) -> dict:
    "The run's config.json (older field names read as today's), less its two folders."
    saved = current_names(json.loads((run/"config.json").read_text()))
    return {k: v for k, v in saved.items() if k not in ("output_dir", "cache_dir", *FIELDS_SINCE)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("same_runs")
    trees = {"reference": reference_tree(root/"reference_code"), "current": REPO}
    for code in trees.values():  # each run imports the package from its own tree
        where = subprocess.run([sys.executable, "-c", "import text2imagegen; print(text2imagegen.__file__)"], capture_output=True,
                               text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(code)}).stdout.strip()
        assert Path(where).parent == code/"text2imagegen", where
    made = {}
    for name, code in trees.items():
        (root/name).mkdir()
        run, cache = root/name/"run", root/name/"cache"
        t2i_train(code, run, cache)
        made[name, "run"] = dict(files=run_files(run), losses=losses(run), weights=weights(run), pixels=pixels(run), config=config(run))
        t2i_train(code, run, cache, "--resume", "--max-steps", "8")
        made[name, "resumed"] = dict(files=run_files(run), losses=losses(run), weights=weights(run), pixels=pixels(run), config=config(run))
    return made


@pytest.mark.parametrize("stage", ["run", "resumed"])
def test_same_files_weights_losses(runs, stage):
    ref, cur = runs["reference", stage], runs["current", stage]
    assert cur["files"] == ref["files"] | ADDED_SINCE
    assert len(cur["losses"]) == (6 if stage == "run" else 8) and cur["losses"] == ref["losses"]
    assert cur["config"] == ref["config"]
    assert cur["weights"].keys() == ref["weights"].keys() and cur["weights"]
    for path, tensors in ref["weights"].items():
        assert tensors.keys() == cur["weights"][path].keys(), path
        for k, v in tensors.items(): assert v.equal(cur["weights"][path][k]), f"{path}: {k}"
    assert cur["pixels"].keys() == ref["pixels"].keys() and cur["pixels"]
    for name, im in ref["pixels"].items(): assert np.array_equal(im, cur["pixels"][name]), name
