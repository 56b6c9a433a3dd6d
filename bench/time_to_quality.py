"""Time to quality: train the offline default and score the adherence benchmark along the way, against minutes and images.

    python bench/time_to_quality.py                      # t2i-train's default recipe (1,600 steps), 2 threads (bench/README.md)
    python bench/time_to_quality.py --minutes 1 --points 0.5 --n-per-prompt 1 --final-n-per-prompt 1 --per-category 5 --guidance 1,2  # smoke
    python bench/time_to_quality.py --final-steps 10,20,40 --final-schedulers dpm++2m,unipc,euler,ddim   # also choose the sampler

Trains with `text2imagegen.train` exactly as `t2i-train` does (the same `TrainConfig` defaults; `--overrides "key=value;..."`
changes fields; `--minutes` caps the wall-clock time), saving the EMA model at fixed wall-clock minutes (time spent
saving snapshots is excluded).
After training, every snapshot and the final model are scored with the adherence benchmark (fixed prompts and seeds)
at each guidance scale of a sweep that includes 1. Writes `ttq.json`, `ttq.csv` and `ttq.png` (each category's score
against minutes and images seen), and prints training images/s and sampling seconds per image.
Wall-clock numbers are only comparable when nothing else runs on the machine: the load average is recorded.
"""
from __future__ import annotations
import csv, json, os, platform, time
from dataclasses import asdict, fields
from pathlib import Path

T_PROCESS = time.time()  # `t2i-train`'s clock starts with the process; imports are part of the budget

import torch
from fastcore.script import call_parse

from text2imagegen.judge import ADHERENCE_TARGETS, adherence_benchmark, load_judge, write_adherence_report
from text2imagegen.model import load_pipeline
from text2imagegen.train import Callback, Trainer, TrainConfig, read_log

T_IMPORTS = time.time()  # after the imports `t2i-train` also pays for

CATEGORY_TARGETS = {c: t for c, t in ADHERENCE_TARGETS.values()}  # category -> target score


def floats(text:str) -> list:
    "Comma-separated numbers ('1,1.5,2') -> list of floats (empty text -> [])."
    return [float(x) for x in str(text).replace(" ", "").split(",") if x]


def parse_sets(items:list) -> dict:
    "['lr=0.003', 'kind_weights={\"single\":1}'] -> TrainConfig overrides (values parsed as JSON where possible)."
    names, out = {f.name for f in fields(TrainConfig)}, {}
    for item in items:
        if "=" not in item: raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        if k not in names: raise ValueError(f"Unknown TrainConfig field {k!r}; accepted: {sorted(names)}")
        try: out[k] = json.loads(v)
        except json.JSONDecodeError: out[k] = v
    return out


def save_snapshot(trainer, folder:Path) -> float:
    "Save the trainer's EMA pipeline to `folder`; returns the seconds it took."
    t0 = time.time()
    with trainer.ema_weights(): trainer.pipe.save_pretrained(folder)
    return time.time() - t0


class SnapshotCallback(Callback):
    "Save the EMA pipeline to `snapshots/step_*` at each mark, after the step's own work; saving time is left out of the budget."
    def __init__(self, minutes:list=(), # wall-clock minutes (since the trainer started) to snapshot at
                 images:list=(), # or: images seen to snapshot at
                ):
        self.marks = sorted([("minutes", m) for m in minutes] + [("images", m) for m in images], key=lambda m: m[1])
        self.points, self.overhead_s, self.first_step_s = [], 0.0, None

    def before_fit(self, trainer):
        c = trainer.config  # resolved values
        self.per_step = c.batch_size * c.grad_accum * trainer.accelerator.num_processes

    def after_step(self, trainer):
        elapsed = time.time() - trainer.t_start
        if self.first_step_s is None: self.first_step_s = elapsed
        seen = trainer.step * self.per_step
        due = [m for m in self.marks if (elapsed >= m[1] * 60 if m[0] == "minutes" else seen >= m[1])]
        if not due or trainer.last: return
        for m in due: self.marks.remove(m)
        folder = trainer.run_dir / "snapshots" / f"step_{trainer.step:06d}"
        dt = save_snapshot(trainer, folder)
        trainer.t_start += dt  # the budget excludes the time spent saving snapshots
        self.overhead_s += dt
        self.points.append(dict(label=f"{elapsed / 60:.1f} min", path=str(folder), minutes=elapsed / 60, step=trainer.step,
                                images_seen=seen, images_per_s=trainer.images_per_s, save_s=dt))
        print(f"snapshot at {elapsed / 60:.2f} min, step {trainer.step}, {seen} images seen -> {folder}", flush=True)


def train_with_snapshots(config:TrainConfig, # the run's config (its output_dir gets `snapshots/`)
                         minutes:list=(), # wall-clock minutes (since the trainer started) to snapshot at
                         images:list=(), # or: images seen to snapshot at (used by the recipe search)
                        ) -> dict:
    "Train `config`, saving the EMA pipeline at the given marks; returns the run folder, snapshots and timings."
    snapshots = SnapshotCallback(minutes, images)
    trainer = Trainer(config, callbacks=[snapshots])
    t_trainer = trainer.t_start
    run_dir = trainer.fit()
    end, per_step = time.time(), snapshots.per_step
    final = dict(label="final", path=str(Path(run_dir) / "model"), minutes=(end - trainer.t_start) / 60, step=trainer.step,
                 images_seen=trainer.step * per_step, images_per_s=None, save_s=0.0)
    rows = [r for r in read_log(Path(run_dir) / "log.csv") if r.get("images_per_s")]
    steady = sorted(r["images_per_s"] for r in rows[len(rows) // 5:]) or [float("nan")]  # skip the first fifth (warm-up)
    loop_s = end - t_trainer - snapshots.overhead_s - (snapshots.first_step_s or 0)
    return {"run_dir": str(run_dir), "points": snapshots.points + [final],
            "timing": {"setup_s": snapshots.first_step_s, "snapshot_overhead_s": snapshots.overhead_s,
                       "train_wall_s": end - t_trainer - snapshots.overhead_s,
                       "images_per_s_median": steady[len(steady) // 2],
                       "images_per_s_overall": final["images_seen"] / loop_s if loop_s > 0 else None}}


def score_point(path:str, # pipeline folder
                guidance:list, # guidance scales
                judge, # the Shapes judge
                n_per_prompt:int=1, # images per prompt
                per_category:int|None=None, # first n prompts per category
                categories=None, # benchmark categories (None: all)
                steps:int|None=None, # denoising steps (None: the model's default)
                scheduler:str|None=None, # sampler (None: the model's default)
                seed:int=0, # benchmark seed
                report_dir:Path|None=None, # write the full adherence report of each guidance here
                batch_size:int=64, # images per pipeline call
               ) -> list:
    "Adherence benchmark of one saved model at each guidance scale: one row per (guidance, category)."
    pipe = load_pipeline(path)
    rows = []
    for g in guidance:
        t0 = time.time()
        rep = adherence_benchmark(pipe, n_per_prompt=n_per_prompt, seed=seed, judge=judge, categories=categories,
                                  per_category=per_category, progress=False, guidance_scale=g, steps=steps, scheduler=scheduler,
                                  batch_size=batch_size)
        s_per_image = (time.time() - t0) / len(rep["results"])
        if report_dir is not None: write_adherence_report(rep, Path(report_dir) / f"guidance_{g:g}")
        st = rep["settings"]
        for c, s in {**rep["categories"], "overall": rep["overall"]}.items():
            rows.append(dict(guidance=g, scheduler=st["scheduler"], steps=st["steps"], category=c, score=s["score"],
                             passed=s["passed"], n=s["n"], ci_lo=s["ci95"][0], ci_hi=s["ci95"][1], sample_s_per_image=s_per_image,
                             clauses=json.dumps(s["clauses"])))  # per-clause pass rates: signal before whole prompts pass
    return rows


def plot(rows:list, # scored rows with minutes, images_seen, guidance, category, score
         path:Path, # PNG to write
         title:str="", # figure title
        ):
    "One panel per category: score against wall-clock minutes (tick labels also give images seen), a line per guidance."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cats = [c for c in dict.fromkeys(r["category"] for r in rows) if c != "overall"]
    ncols = 3
    nrows = -(-len(cats) // ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.1 * nrows), dpi=80, squeeze=False)
    ticks = sorted({(round(r["minutes"], 2), r["images_seen"]) for r in rows})
    for ax, c in zip(axs.flat, cats):
        for g in sorted({r["guidance"] for r in rows}):
            pts = sorted((r["minutes"], r["score"]) for r in rows if r["category"] == c and r["guidance"] == g)
            ax.plot(*zip(*pts), "o-", label=f"guidance {g:g}")
        if c in CATEGORY_TARGETS: ax.axhline(CATEGORY_TARGETS[c], color="k", ls="--", lw=0.8, label="target")
        ax.set_title(c); ax.set_ylim(-0.02, 1.02); ax.grid(alpha=0.3)
        ax.set_xticks([m for m, _ in ticks], [f"{m:.1f}\n{n / 1000:.0f}k" for m, n in ticks], fontsize=7)
        ax.set_xlabel("minutes / images seen", fontsize=8)
    for ax in list(axs.flat)[len(cats):]: ax.axis("off")
    axs.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9); fig.tight_layout()
    fig.savefig(path); plt.close(fig)
    return path


def write_csv(rows:list, path:Path):
    "Rows (dicts with the same keys) as CSV."
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)


def summary_table(rows:list) -> str:
    "Markdown: score per category for each (point, guidance)."
    cats = list(dict.fromkeys(r["category"] for r in rows))
    keys = list(dict.fromkeys((r["label"], r["minutes"], r["images_seen"], r["guidance"]) for r in rows))
    lines = ["| point | minutes | images seen | guidance | " + " | ".join(cats) + " | s/image |", "|---" * (len(cats) + 5) + "|"]
    for label, m, n, g in keys:
        sel = {r["category"]: r for r in rows if (r["label"], r["guidance"]) == (label, g)}
        lines.append(f"| {label} | {m:.2f} | {n} | {g:g} | " + " | ".join(f"{sel[c]['score']:.3f}" for c in cats)
                     + f" | {next(iter(sel.values()))['sample_s_per_image']:.3f} |")
    return "\n".join(lines)


@call_parse
def main(
    minutes:float=None, # Wall-clock cap (TrainConfig.max_minutes, set-up and final save included; default: none, the run's own steps)
    threads:int=2, # CPU threads for torch (training and sampling)
    points:str="2.5,5,7.5", # Minutes at which to snapshot the EMA model (the final model is always scored)
    guidance:str="1,1.5,2,3", # Guidance scales to score at every point (1 = no guidance)
    n_per_prompt:int=1, # Benchmark images per prompt at the snapshots
    final_n_per_prompt:int=2, # Benchmark images per prompt for the final model
    per_category:int=None, # First n prompts of each benchmark category (default: all 60)
    steps:int=None, # Denoising steps (default: the model's sample_defaults)
    scheduler:str=None, # Sampler (default: the model's sample_defaults)
    final_steps:str="", # Also score the final model at these step counts (e.g. '10,20,40'), at --final-guidance
    final_schedulers:str="", # Also score the final model with these samplers (e.g. 'dpm++2m,unipc,euler'), at --final-guidance
    final_guidance:float=1.0, # Guidance for the steps/sampler sweeps
    seed:int=0, # Benchmark seed
    out:str=None, # Output folder (default: bench/results/ttq-<UTC time>)
    overrides:str=None, # TrainConfig overrides 'key=value;key=value' (values as JSON), e.g. 'lr=0.003;batch_size=64'
    keep_run:bool=False, # Keep the run folder's checkpoints (snapshots and model are always kept)
):
    "Train the default recipe (capped at `minutes`) and score the adherence benchmark against minutes and images seen."
    torch.set_num_threads(threads)
    out = Path(out or f"bench/results/ttq-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    out.mkdir(parents=True, exist_ok=True)
    judge = load_judge()  # trained once and cached, before the clock starts for the run below
    overrides = parse_sets([s for s in (overrides or "").split(";") if s.strip()])
    config = TrainConfig(**{**dict(max_minutes=minutes, num_threads=threads, output_dir=str(out / "run")), **overrides})
    load_start = os.getloadavg()
    trained = train_with_snapshots(config, minutes=[m for m in floats(points) if not minutes or m < minutes])
    load_train = os.getloadavg()
    trained["timing"]["imports_s"] = T_IMPORTS - T_PROCESS  # paid by `t2i-train` before its trainer starts (not in train_wall_s)
    trained["timing"]["start_to_finish_s"] = trained["timing"]["imports_s"] + trained["timing"]["train_wall_s"]  # what `t2i-train` takes
    print(f"trained: {trained['points'][-1]['step']} steps, {trained['points'][-1]['images_seen']} images in "
          f"{trained['timing']['train_wall_s'] / 60:.2f} min; {trained['timing']['images_per_s_median']:.1f} images/s "
          f"(load average {load_train[0]:.2f})", flush=True)

    rows, gs = [], floats(guidance)
    for p in trained["points"]:
        final = p["label"] == "final"
        scored = score_point(p["path"], gs, judge, final_n_per_prompt if final else n_per_prompt, per_category,
                             steps=steps, scheduler=scheduler, seed=seed, report_dir=out / "final_reports" if final else None)
        rows += [{**{k: p[k] for k in ("label", "minutes", "step", "images_seen")}, **r} for r in scored]
        print(f"scored {p['label']} ({p['minutes']:.2f} min, {p['images_seen']} images)", flush=True)
    sweeps = []
    final = trained["points"][-1]
    for st in [int(x) for x in floats(final_steps)]:
        sweeps += [{"sweep": "steps", **r} for r in score_point(final["path"], [final_guidance], judge, final_n_per_prompt,
                                                                  per_category, steps=st, scheduler=scheduler, seed=seed)]
    for sc in [s for s in final_schedulers.split(",") if s.strip()]:
        sweeps += [{"sweep": "scheduler", **r} for r in score_point(final["path"], [final_guidance], judge, final_n_per_prompt,
                                                                      per_category, steps=steps, scheduler=sc.strip(), seed=seed)]
    load_end = os.getloadavg()

    result = {"minutes": minutes, "threads": threads, "config": asdict(config), "timing": trained["timing"],
              "load_average": {"before_training": load_start, "after_training": load_train, "end": load_end},
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
              "benchmark": {"n_per_prompt": n_per_prompt, "final_n_per_prompt": final_n_per_prompt, "per_category": per_category,
                            "seed": seed, "guidance": gs, "judge": getattr(judge, "path", None), "judge_ceiling": judge.ceiling},
              "points": trained["points"], "rows": rows, "final_sweeps": sweeps, "targets": CATEGORY_TARGETS}
    (out / "ttq.json").write_text(json.dumps(result, indent=1, default=str))
    write_csv(rows, out / "ttq.csv")
    if sweeps: write_csv(sweeps, out / "final_sweeps.csv")
    plot(rows, out / "ttq.png", f"{minutes:g}-minute budget, {threads} threads, "
         f"{trained['timing']['images_per_s_median']:.0f} training images/s (load avg {load_train[0]:.1f})")
    if not keep_run:
        import shutil; shutil.rmtree(out / "run" / "checkpoints", ignore_errors=True)
    table = summary_table(rows)
    print(table)
    if sweeps: print(summary_table([{**r, "label": f"final, {r['scheduler']} {r['steps']} steps", "minutes": final["minutes"],
                                     "images_seen": final["images_seen"]} for r in sweeps]))
    print(f"start to finish (imports + training + final save): {trained['timing']['start_to_finish_s'] / 60:.2f} min")
    print(f"training images/s (median step): {trained['timing']['images_per_s_median']:.1f}; setup {trained['timing']['setup_s']:.0f} s; "
          f"load average before/after training {load_start[0]:.2f}/{load_train[0]:.2f}")
    print("sampling s/image: " + ", ".join(f"guidance {g:g}: {next(r['sample_s_per_image'] for r in rows if r['label'] == 'final' and r['guidance'] == g):.4f}" for g in gs))
    print(f"outputs: {out}/ttq.json, ttq.csv, ttq.png; final model {final['path']}; snapshots {out / 'run' / 'snapshots'}; "
          f"adherence reports of the final model {out / 'final_reports'}")
    return result
