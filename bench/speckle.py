"""Background speckle of trained models against the sampler, its steps and guidance.

Speckle is `text2imagegen.metrics.background_speckle`: the share of background pixels (outside the objects and a
1-pixel margin) farther than 24 from white. Every model draws the same benchmark prompts with the same seeds under
each setting, so rows differ only by model and setting. `dpm++2m_thresholding` is dpm++2m with diffusers' dynamic
thresholding of the x0 prediction. Prints one table and writes JSON.

    python bench/speckle.py --models runs/default                              # one model, every setting
    python bench/speckle.py --models runs/default,bench/results/default-1250   # several models side by side
"""
from __future__ import annotations
import json, time
from pathlib import Path

import torch
from fastcore.script import call_parse

import text2imagegen.sample as S
from text2imagegen.judge import adherence_prompts, benchmark_seeds
from text2imagegen.metrics import background_speckle
from text2imagegen.model import load_pipeline

from _common import markdown_table

_dpm_class, _dpm_kwargs = S.SAMPLERS["dpm++2m"]
S.SAMPLERS["dpm++2m_thresholding"] = (_dpm_class, {**_dpm_kwargs, "thresholding": True})  # the default sampler, x0 clipped

SETTINGS = "dpm++2m:20:3,dpm++2m:20:1,dpm++2m:20:2,dpm++2m:20:5,dpm++2m:50:3,euler_a:30:3,dpm++2m_thresholding:20:3"


def parse_settings(text:str) -> list:
    "'sampler:steps:guidance,...' as (sampler, steps, guidance) tuples, each sampler checked against `SAMPLERS`."
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split(":")
        if len(parts) != 3 or parts[0] not in S.SAMPLERS:
            raise ValueError(f"setting {item!r}: give sampler:steps:guidance with a sampler in {', '.join(S.SAMPLERS)}")
        out.append((parts[0], int(parts[1]), float(parts[2])))
    return out


def speckle_rows(model:str, settings:list, per_category:int, categories:list, batch_size:int=48) -> list:
    "Speckle of one model's benchmark images under each setting: one row per setting."
    pipe = load_pipeline(model)
    items = adherence_prompts(categories, per_category)
    prompts, seeds = [it["prompt"] for it in items], benchmark_seeds(items, 1, 0)
    rows = []
    for sampler, steps, guidance in settings:
        t0 = time.time()
        images = [g.image for g in S.generate(pipe, prompts, progress=False, scheduler=sampler, steps=steps,
                                              guidance_scale=guidance, seed=seeds, batch_size=batch_size)]
        sp = background_speckle(images)
        rows.append(dict(model=model, sampler=sampler, steps=steps, guidance=guidance, speckle=sp["speckle"],
                         images_with_speckle=sum(p > 0 for p in sp["per_image"]), n=sp["n"], seconds=time.time() - t0))
        print(f"{model} {sampler} {steps} steps guidance {guidance:g}: speckle {sp['speckle']:.4f}", flush=True)
    return rows


@call_parse
def main(
    models:str="runs/default", # Comma-separated run or pipeline folders
    settings:str=SETTINGS, # Comma-separated sampler:steps:guidance
    per_category:int=32, # First n prompts of each benchmark category (one image each)
    categories:str="single,counting,held-out", # Benchmark categories to draw
    threads:int=1, # CPU threads
    out:str="bench/results/speckle.json", # JSON output
):
    "Background speckle of each model under each sampler setting."
    torch.set_num_threads(threads)
    tried = parse_settings(settings)
    rows = [r for m in models.split(",") if m.strip()
            for r in speckle_rows(m.strip(), tried, per_category, [c.strip() for c in categories.split(",")])]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(dict(rows=rows), indent=1))
    print(markdown_table([[r["model"], r["sampler"], r["steps"], f"{r['guidance']:g}", r["speckle"], f"{r['images_with_speckle']}/{r['n']}"]
                          for r in rows], ["model", "sampler", "steps", "guidance", "speckle", "images with speckle"]))
    print(f"JSON: {out}")
