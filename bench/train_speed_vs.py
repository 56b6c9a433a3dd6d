"""Training speed against a git ref: does the code of this checkout train the offline default as fast as the ref's?

Runs `t2i-train`'s default (the tiny preset on the Shapes world, every setting at its default but `--max-steps` and
the run folder) with the code of this checkout and with the code of `--ref`, checked out by `git worktree` in a
temporary folder that is removed at the end (also after Ctrl-C). Each round runs both, one after the other, the order
swapping every round, each in a fresh Python process whose `PYTHONPATH` is its tree: the process prints
`text2imagegen.__file__`, and the script stops if it is not that tree's. images/s is the mean of the `images_per_s`
column of the run's `log.csv` over its steady state: the first fifth of the logged steps (at least one) is left out as
warm-up. Wall is the process's time from start to exit: imports, set-up (rendering the Shapes pool; reading or
filling the disk caches where the code has them), training, the final validation and save. The in-training probe is
switched off in a tree that has it, so both sides do the same work. Prints a table per
round, the ratio current / reference and its mean, and the machine; writes JSON.

    python bench/train_speed_vs.py                       # against c8a9ceb: 2 rounds of 90 steps
    python bench/train_speed_vs.py --ref HEAD~1 --rounds 4
    python bench/train_speed_vs.py --smoke --ref HEAD    # 1 round of 4 steps on a 64-image pool: checks the script runs
"""
from __future__ import annotations
import csv, json, os, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

from fastcore.script import call_parse

from _common import machine_info, markdown_table, run_measured

ROOT = Path(__file__).resolve().parents[1]  # this checkout
TRAIN = ("import text2imagegen; print('text2imagegen from', text2imagegen.__file__, flush=True)\n"
         "from text2imagegen.train import t2i_train\nt2i_train()\n")  # `t2i-train` of whichever tree is on PYTHONPATH
SMOKE_FLAGS = ["--shapes-pool", "64", "--val-size", "8", "--sample-steps", "2", "--val-seeds", "0"]  # both CLIs take these


def steady_images_per_s(log:Path) -> tuple:
    "Mean of `log.csv`'s images_per_s (the trainer's moving average of its step time) after the first fifth of the logged steps (at least one), and how many steps it averages."
    with open(log, newline="") as f: speeds = [float(r["images_per_s"]) for r in csv.DictReader(f) if r.get("images_per_s")]
    steady = speeds[max(1, len(speeds) // 5):] or speeds
    if not steady: raise RuntimeError(f"{log} has no images_per_s")
    return statistics.fmean(steady), len(steady)


def train_run(script:Path, tree:Path, run_dir:Path, max_steps:int, flags:list=()) -> dict:
    "`t2i-train --max-steps N --output-dir run_dir` with the code of `tree`: its steady images/s and its wall seconds."
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    done = run_measured([sys.executable, script, "--max-steps", max_steps, "--output-dir", run_dir, *flags], env=env, cwd=tree,
                        what=f"t2i-train of {tree}")
    loaded = next((line.split(" from ", 1)[1] for line in done.stdout.splitlines() if line.startswith("text2imagegen from ")), "")
    if not Path(loaded).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"the run meant for {tree} imported text2imagegen from {loaded or 'nowhere it printed'}")
    images_per_s, steps = steady_images_per_s(run_dir / "log.csv")
    return dict(images_per_s=images_per_s, steady_steps=steps, wall_s=done.seconds, peak_rss_mb=done.peak_mb, module=loaded)


def probe_off(tree:Path) -> list:
    "`--probe-per-category 0` where the tree's trainer has the in-training probe (it would add to one side's wall)."
    return ["--probe-per-category", "0"] if any("probe_per_category" in p.read_text() for p in (tree / "text2imagegen").glob("*.py")) else []


def git(*args) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


@call_parse
def main(ref:str="c8a9ceb",                            # Git ref whose code is the reference
         rounds:int=2,                                 # Rounds; each runs the reference and the current code once
         max_steps:int=90,                             # Training steps of every run
         out:str="bench/results/train_speed_vs.json",  # JSON of every run
         smoke:bool=False,                             # 1 round of 4 steps on a 64-image pool: check that the script runs
):
    "Images/s and wall time of the default training at this checkout and at `ref`, interleaved."
    if smoke: rounds, max_steps = 1, 4
    sha, here = git("rev-parse", "--short", f"{ref}^{{commit}}"), git("rev-parse", "--short", "HEAD")
    dirty = " with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    work = Path(tempfile.mkdtemp(prefix="train_speed_vs-"))
    trees = {"reference": work / "ref", "current": ROOT}
    runs, t0 = [], time.perf_counter()
    try:
        git("worktree", "add", "--detach", str(trees["reference"]), sha)
        script = work / "t2i_train.py"  # a script file: `python -c` would not parse the flags
        script.write_text(TRAIN)
        for r in range(rounds):
            for name in (("reference", "current") if r % 2 == 0 else ("current", "reference")):
                flags = [*(SMOKE_FLAGS if smoke else []), *probe_off(trees[name])]
                got = train_run(script, trees[name], work / f"{name}{r}", max_steps, flags)
                runs.append(dict(round=r + 1, code=name, **got))
                print(f"round {r + 1}/{rounds} {name}: {got['images_per_s']:.1f} images/s, {got['wall_s']:.0f} s", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["reference"])], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)

    by = {(x["round"], x["code"]): x for x in runs}
    rows = [dict(round=str(r), ref_ips=by[(r, "reference")]["images_per_s"], cur_ips=by[(r, "current")]["images_per_s"],
                 ref_wall=by[(r, "reference")]["wall_s"], cur_wall=by[(r, "current")]["wall_s"]) for r in range(1, rounds + 1)]
    for row in rows: row.update(ips_ratio=row["cur_ips"] / row["ref_ips"], wall_ratio=row["cur_wall"] / row["ref_wall"])
    mean = {k: statistics.fmean(row[k] for row in rows) for k in rows[0] if k != "round"}
    machine = machine_info()
    result = dict(ref=ref, ref_commit=sha, current_commit=here + dirty, max_steps=max_steps, rounds=rounds, smoke=smoke, machine=machine,
                  load_avg=os.getloadavg()[0], seconds=time.perf_counter() - t0, runs=runs, rows=rows, mean=mean)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    settings = " ".join(SMOKE_FLAGS) if smoke else "the default otherwise"
    print(f"\n`t2i-train --max-steps {max_steps}` ({settings}): reference {ref} ({sha}) against the current "
          f"checkout ({here}{dirty}); images/s is the mean after the first fifth of the steps\n")
    print(markdown_table(rows + [dict(round="mean", **mean)],
                         ["round", "ref_ips", "cur_ips", "ips_ratio", "ref_wall", "cur_wall", "wall_ratio"],
                         dict(ref_ips="reference images/s", cur_ips="current images/s", ips_ratio="images/s current / reference",
                              ref_wall="reference wall (s)", cur_wall="current wall (s)", wall_ratio="wall current / reference")))
    print(f"\nCPU: {machine['cpu']} ({machine['cores']} cores), torch {machine['torch']}, GPU: {machine['gpu'] or 'none'}; "
          f"each run on the tiny preset's threads; load average {result['load_avg']:.1f} at the end; {result['seconds']:.0f} s in all; JSON: {out}")
