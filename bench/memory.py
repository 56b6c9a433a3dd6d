"""Does memory stay flat over a long run? Resident memory (RSS) of the training process over 2,000 steps, and of
sampling 1,000 images, read from /proc after every chunk of work: after the warm-up it should not grow.

    python bench/memory.py                       # 2,000 steps (tiny preset, 32 px, batch 8), then 1,000 images
    python bench/memory.py --steps 300 --images 200   # a quick look

Prints two tables (RSS at checkpoints of the work) and the growth after warm-up, and writes JSON to --out.
"""
from __future__ import annotations
import json, tempfile, time
from pathlib import Path

from fastcore.script import call_parse

from text2imagegen.model import load_pipeline
from text2imagegen.sample import generate
from text2imagegen.train import Callback, Trainer, TrainConfig

from _common import machine_info, markdown_table


def rss_mb() -> float:
    "Resident memory of this process in MB (VmRSS)."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def growth(points:list, warmup:float=0.1) -> float:
    "RSS at the end minus RSS after the first `warmup` share of the work (MB)."
    start = next(p for p in points if p[0] >= warmup * points[-1][0])
    return points[-1][1] - start[1]


@call_parse
def main(steps:int=2000, # training steps
         images:int=1000, # images to sample
         every:int=100, # steps (or images) between readings
         out:str="bench/results/memory", # JSON goes here
        ):
    "RSS over a long training run and a long sampling run."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp()) / "run"
    cfg = TrainConfig(max_steps=steps, max_minutes=0, batch_size=8, shapes_pool=2000, val_size=64, val_every=500, probe_per_category=0,
                      checkpoint_every=500, sample_steps=4, val_seeds=[0], output_dir=str(run))
    train_points = []
    class RSSCallback(Callback):
        "Read the RSS every `every` steps, after the step's own work."
        def after_step(self, trainer):
            if trainer.step % every == 0: train_points.append((trainer.step, rss_mb())); print('RSS', *train_points[-1], flush=True)
    trainer = Trainer(cfg, callbacks=[RSSCallback()])
    t0 = time.time(); trainer.fit(); train_s = time.time() - t0
    pipe, sample_points, done = load_pipeline(run), [], 0
    t0 = time.time()
    while done < images:
        n = min(every, images - done)
        generate(pipe, ["a large red circle on the left"] * n, seed=done, steps=4, batch_size=50, progress=False)
        done += n; sample_points.append((done, rss_mb())); print('RSS', *sample_points[-1], flush=True)
    sample_s = time.time() - t0
    for name, pts, unit in (("training", train_points, "step"), ("sampling", sample_points, "image")):
        print(f"\n{name}: RSS (MB) after every {every} {unit}s")
        print(markdown_table([["RSS", *(round(p[1]) for p in pts)]], [unit, *(p[0] for p in pts)]))
        print(f"growth after the first 10%: {growth(pts):+.0f} MB")
    print(f"\ntraining {steps} steps took {train_s:.0f} s; sampling {images} images took {sample_s:.0f} s")
    (out / "memory.json").write_text(json.dumps({"training": train_points, "sampling": sample_points,
                                                  "train_s": train_s, "sample_s": sample_s, "machine": machine_info()}, indent=1))
