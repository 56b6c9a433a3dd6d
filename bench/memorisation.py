"""Memorisation or composition: does a Shapes model draw the captions it trained on better than new ones?

    python bench/memorisation.py runs/default                  # 60 scenes of each kind, 2 images each
    python bench/memorisation.py runs/default --guidance 1,3   # at other guidance scales

For each scene kind, takes the first `n` scenes of the run's own training pool (exact captions it was trained on) and
`n` new scenes of the same split (seen colour/shape pairs, mostly new combinations of them), draws `n_per_prompt`
images of each with the model's sample defaults, and scores them clause by clause with the adherence judge. If both
score alike, the model's errors are not a failure to generalise to new captions: it has not learnt those scenes at all.
Reads the run's `config.json` (seed, resolution, pool size, scene mix), so it needs a run folder written by `t2i-train`.
"""
from __future__ import annotations
import json
from collections import defaultdict
from pathlib import Path

import torch
from fastcore.script import call_parse

from text2imagegen.data import SCENE_KINDS, ShapesWorld
from text2imagegen.judge import judge_clauses, load_judge, summarise
from text2imagegen.model import load_pipeline
from text2imagegen.sample import generate

from _common import table_header, table_row

NEW_START = 10**8  # new scenes are drawn from this index on, far past any training pool


def first_of_each_kind(scenes, kinds:list, n:int) -> dict:
    "{kind: [(clauses, caption)]}: the first `n` of each kind in `scenes`, an iterable of (clauses, caption)."
    found = defaultdict(list)
    for clauses, caption in scenes:
        if len(found[clauses["kind"]]) < n: found[clauses["kind"]].append((clauses, caption))
        if all(len(found[k]) >= n for k in kinds): break
    return found


def score(pipe, judge, items:list, n_per_prompt:int, guidance:float) -> dict:
    "Pass rate and per-clause rates of `items` [(clauses, caption)], `n_per_prompt` images each (seeds 0, 1, ...)."
    clauses, captions = [c for c, _ in items] * n_per_prompt, [p for _, p in items] * n_per_prompt
    images = [g.image for g in generate(pipe, captions, guidance_scale=guidance, seed=0, progress=False)]
    overall = summarise([{"category": "", **r} for r in judge_clauses(judge, images, clauses)])["overall"]
    return {"passed": overall["score"], "n": overall["n"], "clauses": overall["clauses"]}


@call_parse
def main(run:str,                   # Run folder written by `t2i-train` (its config.json says how the pool was drawn)
         n:int=60,                  # Scenes per kind from the pool, and as many new ones
         n_per_prompt:int=2,        # Images per scene
         guidance:str="",           # Comma-separated guidance scales (default: the model's own)
         threads:int=2,             # CPU threads for torch
         out:str="",                # JSON file for the results (default: <run>/memorisation.json)
        ):
    "Score a Shapes model on scenes from its own training pool against new scenes of the same split."
    torch.set_num_threads(threads)
    run = Path(run)
    config_path = run / "config.json"
    if not config_path.is_file(): raise FileNotFoundError(f"{config_path} not found: give a run folder written by t2i-train")
    config = json.loads(config_path.read_text())
    if config.get("data", "shapes") != "shapes": raise ValueError(f"{run} was trained on {config['data']!r}, not the Shapes world")
    world = ShapesWorld(config["resolution"], seed=config["seed"], split="train", kind_weights=config.get("kind_weights"),
                        length=NEW_START + 10**6)
    kinds = [k for k, p in zip(world.kinds, world.kind_p) if p > 0]
    _, pool_captions, pool_clauses = world.render_pool(config["shapes_pool"], progress=False)  # the pool, rendered once
    seen = first_of_each_kind(zip(pool_clauses, pool_captions), kinds, n)
    new = first_of_each_kind(((s["clauses"], s["caption"]) for s in map(world.__getitem__, range(NEW_START, len(world)))), kinds, n)
    pool_captions = set(pool_captions)
    pipe, judge = load_pipeline(run), load_judge()
    scales = [float(g) for g in guidance.split(",") if g] or [pipe.config.sample_defaults.get("guidance_scale", 1.0)]
    rows = []
    print(table_header(["kind", "scenes", "captions in the pool", "guidance", "passed", "clauses"]))
    for kind in (k for k in SCENE_KINDS if k in seen):
        for source, items in (("training pool", seen[kind]), ("new", new[kind])):
            in_pool = sum(caption in pool_captions for _, caption in items)
            for g in scales:
                r = {"kind": kind, "scenes": source, "captions_in_pool": in_pool, "n_scenes": len(items), "guidance": g,
                     **score(pipe, judge, items, n_per_prompt, g)}
                rows.append(r)
                clause_text = ", ".join(f"{k} {v:.2f}" for k, v in r["clauses"].items())
                print(table_row([kind, source, f"{in_pool}/{len(items)}", f"{g:g}", r["passed"], clause_text]))
    path = Path(out) if out else run / "memorisation.json"
    path.write_text(json.dumps(rows, indent=1))
    print(f"results: {path}")
