"""Cost curves: how training and sampling time and memory grow with resolution, batch size and denoising steps.

Four curves on the tiny preset's architecture: the training step (`Trainer.train_step`, the default recipe on the
Shapes world) against resolution at batch 32 and against batch size at 32 px; sampling (`generate` on a
random-weight `build_pipeline("tiny")`, its default sampler and guidance) against denoising steps at batch 16 and
against batch size at 20 steps. Each point runs in a subprocess of its own, so its peak RSS (from `wait4`) is its own;
the points run `--repeats` times, the passes one after the other, and each point keeps its fastest pass. Writes JSON,
a four-panel PNG and a markdown table.

    python bench/cost_curves.py            # the four curves (~8 minutes on 2 idle cores)
    python bench/cost_curves.py --smoke    # two points per curve, tiny sizes: checks the script runs
"""
from __future__ import annotations
import json, os, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from fastcore.script import call_parse

from _common import machine_info, markdown_table, run_worker

PROMPTS = ["a large red circle on the left", "a small blue square at the top", "three small green squares",
           "a large blue circle above a small red square"]


def curves(smoke:bool=False) -> dict:
    "{curve: (varied key, [point specs])}: the points of each curve; points shared between curves run once."
    if smoke:
        return {"train vs resolution": ("resolution", [dict(task="train", resolution=r, batch=4) for r in (16, 32)]),
                "train vs batch": ("batch", [dict(task="train", resolution=16, batch=b) for b in (2, 4)]),
                "sample vs steps": ("steps", [dict(task="sample", steps=s, batch=2) for s in (2, 4)]),
                "sample vs batch": ("batch", [dict(task="sample", steps=2, batch=b) for b in (1, 2)])}
    return {"train vs resolution": ("resolution", [dict(task="train", resolution=r, batch=32) for r in (32, 64, 128)]),
            "train vs batch": ("batch", [dict(task="train", resolution=32, batch=b) for b in (8, 16, 32, 64)]),
            "sample vs steps": ("steps", [dict(task="sample", steps=s, batch=16) for s in (10, 20, 40, 80)]),
            "sample vs batch": ("batch", [dict(task="sample", steps=20, batch=b) for b in (1, 4, 16, 64)])}


def key(spec:dict) -> str: return json.dumps({k: spec[k] for k in sorted(spec) if k in ("task", "resolution", "batch", "steps")})


def worker(spec:dict):
    "One point, in this (fresh) process: seconds per training step or per `generate` call; writes JSON to spec['out']."
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging
    for lib in (diffusers_logging, transformers_logging): lib.set_verbosity_error(); lib.disable_progress_bar()
    torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    if spec["task"] == "train":
        from text2imagegen.train import TrainConfig, Trainer
        b = spec["batch"]
        tr = Trainer(TrainConfig(resolution=spec["resolution"], batch_size=b, shapes_pool=max(128, 2 * b), val_size=16, probe_per_category=0,
                                 num_threads=spec["threads"], cache_dir=spec["cache"], output_dir=spec["run"]))
        setup = time.perf_counter() - t0
        try:
            for _ in range(spec["warmup"]): tr.train_step()
            t0 = time.perf_counter()
            for _ in range(spec["steps_timed"]): tr.train_step()
            seconds = (time.perf_counter() - t0) / spec["steps_timed"]
        finally: tr.release()
        result = dict(seconds=seconds, images_per_s=b / seconds, setup_s=setup)
    else:
        from text2imagegen.model import build_pipeline
        from text2imagegen.sample import generate
        pipe, b = build_pipeline("tiny"), spec["batch"]
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(b)]
        draw = lambda steps: generate(pipe, prompts, steps=steps, batch_size=b, seed=0, progress=False)
        setup = time.perf_counter() - t0
        draw(2)  # warm-up: first-call costs
        t0 = time.perf_counter(); draw(spec["steps"]); seconds = time.perf_counter() - t0
        result = dict(seconds=seconds, images_per_s=b / seconds, seconds_per_step=seconds / spec["steps"], setup_s=setup)
    Path(spec["out"]).write_text(json.dumps(result))


def run_point(spec:dict, work:Path) -> dict:
    "`worker(spec)` in a subprocess: its numbers and its peak RSS (MB, from wait4)."
    return run_worker(__file__, spec, work, what=f"the point {key(spec)}")


def figure(result:dict, path:Path):
    "Four panels: seconds (left axis, with a proportional reference) and peak RSS (right axis) against each curve's variable."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullLocator
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (name, c) in zip(axes.flat, result["curves"].items()):
        x, pts = [p[c["varies"]] for p in c["points"]], c["points"]
        y = [p["seconds"] for p in pts]
        ylabel = "seconds per training step" if name.startswith("train") else "seconds per generate call"
        ax.plot(x, y, "o-", color="C0", label="measured")
        power = 2 if c["varies"] == "resolution" else 1  # pixels grow as resolution squared
        ax.plot(x, [y[0] * (v / x[0]) ** power for v in x], "--", color="C0", alpha=0.4,
                label=f"proportional to {c['varies']}{'²' if power == 2 else ''}")
        ax.set(xscale="log", yscale="log", xlabel=c["varies"], ylabel=ylabel, title=name)
        ax.set_xticks(x, [str(v) for v in x]); ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))  # 2s and 5s
        rss_mb = [p["peak_rss_mb"] for p in pts]
        rss = ax.twinx(); rss.plot(x, rss_mb, "s:", color="C3", label="peak RSS")
        rss.set_ylabel("peak RSS (MB)", color="C3"); rss.tick_params(axis="y", colors="C3"); rss.set_ylim(0, 1.25 * max(rss_mb))
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"tiny preset, {result['threads']} thread{'s' if result['threads'] > 1 else ''} ({result['cpu']})", fontsize=10)
    fig.tight_layout(); fig.savefig(path, dpi=80); plt.close(fig)


def table(result:dict) -> str:
    cells = []
    for name, c in result["curves"].items():
        for p in c["points"]:
            fixed = ", ".join(f"{k} {p[k]}" for k in ("resolution", "batch", "steps") if k in p and k != c["varies"])
            per = "per step" if name.startswith("train") else "per call"
            cells.append([f"{name} ({fixed})", f"{c['varies']} {p[c['varies']]}", f"{p['seconds']:.3f} {per}", p["images_per_s"], p["peak_rss_mb"]])
    return markdown_table(cells, ["curve", "point", "seconds", "images/s", "peak RSS (MB)"]) + "\n"


@call_parse
def main(repeats:int=2,     # Passes over all points (one after the other); each point keeps its fastest
         steps:int=5,       # Timed training steps per training point (after 2 warm-up steps)
         threads:int=2,     # CPU threads for torch
         out:str="bench/results/cost_curves", # Folder for JSON, PNG and the markdown table
         smoke:bool=False,  # Two tiny points per curve, 1 pass of 1 + 1 steps: check that the script runs
         worker_spec:str=None, # (internal) run one point from this JSON file
):
    "Training step time vs resolution and batch; sampling time vs steps and batch; peak RSS of each point."
    if worker_spec: return worker(json.loads(Path(worker_spec).read_text()))
    if smoke: repeats, steps = 1, 1
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    plan = curves(smoke)
    unique = list({key(s): s for _, specs in plan.values() for s in specs}.values())
    load0, t_start, best = os.getloadavg()[0], time.perf_counter(), {}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for r in range(repeats):
            for i, spec in enumerate(unique):
                full = dict(spec, threads=threads, warmup=1 if smoke else 2, steps_timed=steps, cache=str(work / "cache"),
                            run=str(work / f"run{r}-{i}"), out=str(work / "point.json"))
                got = run_point(full, work)
                k = key(spec)
                if k not in best or got["seconds"] < best[k]["seconds"]:
                    best[k] = dict(got, peak_rss_mb=max(got["peak_rss_mb"], best.get(k, {}).get("peak_rss_mb", 0)))
                else: best[k]["peak_rss_mb"] = max(best[k]["peak_rss_mb"], got["peak_rss_mb"])
                print(f"pass {r + 1}/{repeats} {k}: {got['seconds']:.3f} s, {got['peak_rss_mb']:.0f} MB", flush=True)
    result = dict(cpu=machine_info()["cpu"], threads=threads, repeats=repeats, train_steps_timed=steps,
                  load_avg=[load0, os.getloadavg()[0]], wall_s=time.perf_counter() - t_start,
                  curves={name: dict(varies=var, points=[dict(spec, **best[key(spec)]) for spec in specs])
                          for name, (var, specs) in plan.items()})
    (out / "cost_curves.json").write_text(json.dumps(result, indent=1))
    figure(result, out / "cost_curves.png")
    md = table(result); (out / "cost_curves.md").write_text(md)
    print(md + f"JSON: {out / 'cost_curves.json'}\nFigure: {out / 'cost_curves.png'}")
