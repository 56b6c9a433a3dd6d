"""Sampling overhead: how much of `generate`'s time is not the UNet, and how it compares with diffusers' pipeline.

For each model and batch size, three ways of drawing the same number of denoising steps with classifier-free
guidance, interleaved and each the fastest of `--rounds` runs (5): the project's `generate` (text encoding, scheduler, noise,
decoding to PIL included), diffusers' `StableDiffusionPipeline` on the same component objects and scheduler (for
SD-architecture models), and the UNet alone (one batched guidance forward per step through `Text2ImagePipeline.predict`,
nothing else) as the floor of both. `--compile` adds `generate` with the UNet compiled by `torch.compile`, as
`t2i-sample --compile` does. Prints one table of ratios and writes JSON.

    python bench/sample_overhead.py                       # on the CPU: the tiny preset at 32 px, a tiny SD-architecture model at 64 px
    python bench/sample_overhead.py --compile             # also compiled (a minute or so of compiling per batch size)
"""
from __future__ import annotations
import json, os, tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from fastcore.script import call_parse
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from _common import machine_info, markdown_table, sampling_rows

for lib in (diffusers_logging, transformers_logging): lib.set_verbosity_error(); lib.disable_progress_bar()


def overhead_table(rows:list) -> str:
    "A markdown table: steps/s, time over the UNet alone, and the project over diffusers where both ran."
    def vs_diffusers(r):
        sd = next((s for s in rows if s["how"] == "StableDiffusionPipeline" and (s["model"], s["batch"]) == (r["model"], r["batch"])), None)
        return r["seconds"] / sd["seconds"] if sd and r["how"].startswith("generate") else None
    return markdown_table([[r["model"], r["px"], r["batch"], r["how"], r["it_per_s"], r["over_unet"], vs_diffusers(r)] for r in rows],
                          ["model", "px", "batch", "how", "it/s", "time / UNet alone", "project / diffusers"])


@call_parse
def main(steps:int=20,                               # Denoising steps
         batches:str="1,8",                          # Batch sizes, comma-separated
         threads:int=2,                              # CPU threads for torch
         compile:bool=False,                         # Also time generate with the UNet compiled
         rounds:int=5,                               # Interleaved rounds; each way keeps its fastest
         out:str="bench/results/sample_overhead.json", # JSON of every row
):
    "Sampling time of the project's pipeline over the UNet alone, and against diffusers' pipeline, on the CPU."
    from text2imagegen.data import ShapesWorld
    from text2imagegen.model import build_pipeline, tiny_sd_pipeline
    torch.set_num_threads(threads)
    device, bs = torch.device("cpu"), [int(b) for b in batches.split(",")]
    prompts = [ShapesWorld(resolution=32)[i]["caption"] for i in range(max(bs))]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, make, px in (("tiny preset (Shapes)", lambda: build_pipeline("tiny"), 32),
                               ("tiny SD architecture", tiny_sd_pipeline, 64)):
            make().save_pretrained(Path(d) / name)
            rows += [dict(model=name, **r) for r in sampling_rows(Path(d) / name, px, bs, steps, device, prompts, compile=compile, rounds=rounds)]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(dict(threads=threads, torch=torch.__version__, machine=machine_info(), rows=rows), indent=1))
    print(overhead_table(rows)); print(f"JSON: {out}")
