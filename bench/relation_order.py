"""Which part of a relation prompt fails: the axis, the objects, or which object goes first?

    python bench/relation_order.py runs/default                      # the benchmark's 60 relation prompts x 4 images
    python bench/relation_order.py runs/default,other/run --guidance 3

"a blue square above a yellow triangle" passes only when the judge sees two objects on the asked axis (vertical here),
each with its asked colour, shape and size, in the asked order (the blue square first from the top). This splits the
relation prompts of the adherence benchmark (the same prompts and seeds as `04a_judge`) into those steps:
two objects, axis right, both objects' attributes right (in either order), and the order right where the rest is. An
order rate near 0.5 means the model draws the right two objects on the right axis but does not know which goes first.
It also draws the left/right prompts again with "left" and "right" exchanged, with the same seeds, and compares the
two pictures (mean absolute pixel difference, 0-255) with the same prompt at other seeds: a model that reads the
direction changes the picture about as much as a new seed does. Writes `relation_order.json` in each run folder.
"""
from __future__ import annotations
import json
from pathlib import Path

import numpy as np
import torch
from fastcore.script import call_parse

from text2imagegen.data import RELATION_PHRASES
from text2imagegen.judge import adherence_benchmark, load_judge, wilson_interval
from text2imagegen.model import load_pipeline
from text2imagegen.sample import generate

from _common import table_header, table_row

AXIS = {"left of": "horizontal", "right of": "horizontal", "above": "vertical", "below": "vertical"}
LEFT, RIGHT = RELATION_PHRASES["left of"], RELATION_PHRASES["right of"]
EXCHANGE = {LEFT: RIGHT, RIGHT: LEFT}  # the world's own phrases


def order_steps(results:list) -> dict:
    "{step: (images, of)} from the relation rows of an adherence report; each step counts among the images of the one before."
    two = [r for r in results if r["n_objects"] == 2]
    axis = [r for r in two if AXIS[r["seen"]["relation"]] == AXIS[r["clauses"]["relation"]]]  # the judge sees "left of" or "above"
    objects = [r for r in axis if all(v for k, v in r["checks"].items() if k[:2] in ("A ", "B "))]
    order = [r for r in objects if r["checks"]["relation"]]
    return {"two objects": (len(two), len(results)), "axis right": (len(axis), len(two)),
            "both objects right": (len(objects), len(axis)), "order right": (len(order), len(objects))}


def direction_change(pipe, prompts:list, seeds:list, other_seed:int=10**6, **kwargs) -> dict:
    "Mean absolute pixel difference (0-255) of each prompt's picture to its exchanged direction and to other seeds."
    exchanged = [next(p.replace(a, b) for a, b in EXCHANGE.items() if a in p) for p in prompts]
    draw = lambda ps, ss: torch.stack([torch.from_numpy(np.asarray(g.image, dtype=np.float32))
                                       for g in generate(pipe, ps, seed=ss, progress=False, **kwargs)])
    first = draw(prompts, seeds)
    return {"direction exchanged": float((first - draw(exchanged, seeds)).abs().mean()),
            "other seeds": float((first - draw(prompts, [other_seed + s for s in seeds])).abs().mean()), "prompts": len(prompts)}


@call_parse
def main(runs:str,                  # Run folders or saved pipeline folders (comma-separated)
         n_per_prompt:int=4,        # Images per prompt
         guidance:float=None,       # Guidance scale (default: each model's own)
         seed:int=0,                # Benchmark seed
         threads:int=2,             # CPU threads for torch
        ):
    "Split a Shapes model's relation failures into axis, objects and order."
    torch.set_num_threads(threads)
    judge = load_judge()
    print(table_header(["model", "guidance", "passed", *order_steps([])]))
    for run in runs.split(","):
        pipe = load_pipeline(run)
        kwargs = {} if guidance is None else {"guidance_scale": guidance}
        report = adherence_benchmark(pipe, n_per_prompt, seed, judge, categories=["relation"], progress=False, **kwargs)
        steps = order_steps(report["results"])
        g = report["settings"]["guidance_scale"]
        cells = [f"{k}/{n} = {k / max(n, 1):.2f} ({lo:.2f}-{hi:.2f})" for k, n in steps.values()
                 for lo, hi in [wilson_interval(k, n)]]
        print(table_row([run, f"{g:g}", report["overall"]["score"], *cells]))
        sideways = [r for r in report["results"][::n_per_prompt] if AXIS[r["clauses"]["relation"]] == "horizontal"]
        change = direction_change(pipe, [r["prompt"] for r in sideways], [r["seed"] for r in sideways], **kwargs)
        print(f"  'left' <-> 'right' exchanged, same seeds: mean |pixel difference| {change['direction exchanged']:.1f}; "
              f"same prompts at other seeds: {change['other seeds']:.1f} ({change['prompts']} prompts)")
        path = Path(run) / "relation_order.json"
        path.write_text(json.dumps(dict(guidance_scale=g, n_per_prompt=n_per_prompt, seed=seed, passed=report["overall"]["score"],
                                        steps={k: dict(images=a, of=b) for k, (a, b) in steps.items()},
                                        direction_change=change), indent=1))
        print(f"  -> {path}")
