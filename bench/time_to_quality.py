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
import csv, json, os, time
from dataclasses import asdict, fields
from pathlib import Path

T_PROCESS = time.time()  # `t2i-train`'s clock starts with the process; imports are part of the budget

import torch
from fastcore.script import call_parse

from text2imagegen.judge import ADHERENCE_TARGETS, load_judge
from text2imagegen.train import TrainConfig

from _common import machine_info, markdown_table, score_point, train_with_snapshots

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
    cells = []
    for label, m, n, g in keys:
        sel = {r["category"]: r for r in rows if (r["label"], r["guidance"]) == (label, g)}
        cells.append([label, m, n, f"{g:g}", *(sel[c]["score"] for c in cats), next(iter(sel.values()))["sample_s_per_image"]])
    return markdown_table(cells, ["point", "minutes", "images seen", "guidance", *cats, "s/image"])

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
    config = TrainConfig(**{**dict(max_minutes=minutes, num_threads=threads, probe_per_category=0, output_dir=str(out / "run")), **overrides})
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
              "machine": machine_info(),
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
