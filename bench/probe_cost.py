"""Probe cost: how much of the default run's wall time the in-training probe takes.

Runs `t2i-train`'s default (the tiny preset on the Shapes world: 1,600 steps, a validation every 250 steps and at
the last) with the probe at its default size and with `--probe-per-category 0`, interleaved (the order swaps every
round), each in a fresh process on one shared disk cache that a short warm-up run fills first (it also loads, or
trains and caches, the judge). The probe's share is (wall with - wall without) / wall with; the seconds per probe
divide that difference by the run's validations. Prints a table per round and the mean, and the machine; writes JSON.

    python bench/probe_cost.py                  # 1 round of the default run with and without the probe (~20 min on 2 cores)
    python bench/probe_cost.py --rounds 2
    python bench/probe_cost.py --smoke          # 4 steps on a 64-image pool, a probe of 1 prompt per category, no warm-up
"""
from __future__ import annotations
import csv, json, os, shutil, statistics, sys, tempfile, time
from pathlib import Path

from fastcore.script import call_parse

from _common import machine_info, markdown_table, run_measured

SMOKE_FLAGS = ["--shapes-pool", "64", "--val-size", "8", "--val-every", "2", "--sample-steps", "2", "--val-seeds", "0"]


def validations(run:Path) -> int:
    "The validation steps a run logged (rows with a validation loss)."
    with open(run / "log.csv", newline="") as f: return sum(1 for r in csv.DictReader(f) if r["val_loss"])


def train_run(run:Path, max_steps:int, flags:list) -> float:
    "Wall seconds of `t2i-train --max-steps N --output-dir run` with `flags`, in a fresh process."
    cmd = [sys.executable, "-m", "text2imagegen.train", "--max-steps", max_steps, "--output-dir", run, *flags]
    return run_measured(cmd, what=f"t2i-train {' '.join(map(str, flags))}").seconds


@call_parse
def main(rounds:int=1,                            # Rounds; each runs the default with and without the probe once
         max_steps:int=1600,                      # Training steps of every run (the default run: 1600)
         out:str="bench/results/probe_cost.json", # JSON of every run
         smoke:bool=False,                        # 4 steps on a 64-image pool, a probe of 1 prompt per category
):
    "Wall time of the default training run with and without the probe, interleaved."
    extra, probe = (SMOKE_FLAGS, ["--probe-per-category", "1"]) if smoke else ([], [])
    if smoke: rounds, max_steps = 1, 4
    work = Path(tempfile.mkdtemp(prefix="probe_cost-"))
    flags = {"with probe": probe, "without": ["--probe-per-category", "0"]}
    runs, t0 = [], time.perf_counter()
    try:
        extra = [*extra, "--cache-dir", str(work / "cache")]
        if not smoke: train_run(work / "warmup", 1, [*extra, "--warmup-steps", "0", "--probe-per-category", "1"])  # caches, judge
        for r in range(rounds):
            for name in (("with probe", "without") if r % 2 == 0 else ("without", "with probe")):
                run = work / f"run{len(runs)}"
                wall = train_run(run, max_steps, [*extra, *flags[name]])
                runs.append(dict(round=r + 1, probe=name, wall_s=wall, validations=validations(run)))
                print(f"round {r + 1}/{rounds} {name}: {wall:.0f} s", flush=True)
    finally: shutil.rmtree(work, ignore_errors=True)

    by = {(x["round"], x["probe"]): x for x in runs}
    rows = []
    for r in range(1, rounds + 1):
        on, off = by[(r, "with probe")], by[(r, "without")]
        rows.append(dict(round=str(r), wall_on=on["wall_s"], wall_off=off["wall_s"], validations=on["validations"],
                         per_probe=(on["wall_s"] - off["wall_s"]) / on["validations"],
                         share=(on["wall_s"] - off["wall_s"]) / on["wall_s"]))
    mean = {k: statistics.fmean(row[k] for row in rows) for k in rows[0] if k != "round"}
    machine = machine_info()
    result = dict(max_steps=max_steps, rounds=rounds, smoke=smoke, machine=machine, load_avg=os.getloadavg()[0],
                  seconds=time.perf_counter() - t0, runs=runs, rows=rows, mean=mean)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    print(f"\n`t2i-train --max-steps {max_steps}` ({' '.join(SMOKE_FLAGS) if smoke else 'the default otherwise'}), with "
          f"the probe at {'1 prompt' if smoke else 'its default size'} per category and with --probe-per-category 0\n")
    print(markdown_table(rows + [dict(round="mean", **mean)],
                         ["round", "wall_on", "wall_off", "validations", "per_probe", "share"],
                         dict(wall_on="wall with probe (s)", wall_off="wall without (s)", per_probe="s per probe",
                              share="probe's share of the wall time")))
    print(f"\nCPU: {machine['cpu']} ({machine['cores']} cores), torch {machine['torch']}, GPU: {machine['gpu'] or 'none'}; "
          f"load average {result['load_avg']:.1f} at the end; {result['seconds']:.0f} s in all; JSON: {out}")
