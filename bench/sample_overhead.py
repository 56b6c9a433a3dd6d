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
import gc, json, os, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from fastcore.script import call_parse
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

for lib in (diffusers_logging, transformers_logging): lib.set_verbosity_error(); lib.disable_progress_bar()


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def reset_memory(device):
    gc.collect()
    if device.type == "cuda": torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()


def peak_gb(device) -> float|None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def sampling_rows(model:Path, # a saved pipeline folder
                  resolution:int, # image side in pixels
                  batches:list, # batch sizes
                  steps:int, # denoising steps
                  device, # torch device
                  prompts:list, # at least max(batches) prompts
                  dtype=torch.float32, # weights' dtype
                  compile:bool=False, # also time `generate` with the UNet compiled
                  rounds:int=5, # interleaved rounds; each way keeps its fastest
                 ) -> list:
    "Seconds per batch of `generate`, of `StableDiffusionPipeline` on the same components (SD architecture), and of the UNet alone."
    from diffusers import StableDiffusionPipeline
    from text2imagegen.model import is_sd_architecture, load_pipeline
    from text2imagegen.sample import generate, make_sampler
    pipe = load_pipeline(model, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    ways = {"generate (project)": lambda b, n: generate(pipe, prompts[:b], steps=n, guidance_scale=7.5, scheduler="dpm++2m", seed=0,
                                                       batch_size=b, height=resolution, width=resolution, progress=False)}
    if is_sd_architecture(pipe):
        sd = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                                     scheduler=make_sampler("dpm++2m", pipe), safety_checker=None, feature_extractor=None,
                                     requires_safety_checker=False).to(device)
        sd.set_progress_bar_config(disable=True)
        ways["StableDiffusionPipeline"] = lambda b, n: sd(prompts[:b], num_inference_steps=n, guidance_scale=7.5, height=resolution,
                                                          width=resolution, generator=[torch.Generator("cpu").manual_seed(s) for s in range(b)]).images

    @torch.no_grad()
    def unet_alone(b, n):
        hidden, pooled = pipe.encode_prompt(prompts[:b] + [""] * b)  # encoded once, outside the steps
        hidden, pooled = hidden.to(device), None if pooled is None else pooled.to(device)
        x = torch.randn(2 * b, *pipe.model_space_shape(resolution, resolution), device=device, dtype=pipe.unet.dtype)
        for t in range(n): pipe.predict(x, torch.tensor(999 - t), hidden, pooled)
    ways["UNet alone"] = unet_alone

    rows, floor = [], {}
    def timed(way, b):
        reset_memory(device); t0 = time.perf_counter()
        way(b, steps); sync(device)
        return time.perf_counter() - t0
    for b in batches:
        for way in ways.values(): way(b, 2); sync(device)  # warm-up
        best = {k: float("inf") for k in ways}; peaks = {}
        for _ in range(rounds):  # interleaved; the fastest run of each way
            for name, way in ways.items(): best[name] = min(best[name], timed(way, b)); peaks[name] = peak_gb(device)
        floor[b] = best["UNet alone"]
        rows += [dict(task="sample", how=name, px=resolution, batch=b, steps=steps, it_per_s=steps / best[name], seconds=best[name],
                      over_unet=best[name] / floor[b], peak_gb=peaks[name]) for name in ways]
    if compile:  # last: the UNet object is shared, so every way above ran uncompiled
        pipe.unet.compile()
        for b in batches:
            t0 = time.perf_counter(); ways["generate (project)"](b, 2); sync(device); compile_s = time.perf_counter() - t0
            best = min(timed(ways["generate (project)"], b) for _ in range(rounds))
            rows.append(dict(task="sample", how="generate + torch.compile (t2i-sample --compile)", px=resolution, batch=b, steps=steps,
                             it_per_s=steps / best, seconds=best, over_unet=best / floor[b], peak_gb=peak_gb(device), compile_s=compile_s))
    return rows


def overhead_table(rows:list) -> str:
    "A markdown table: steps/s, time over the UNet alone, and the project over diffusers where both ran."
    lines = ["| model | px | batch | how | it/s | time / UNet alone | project / diffusers |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        sd = next((s for s in rows if s["how"] == "StableDiffusionPipeline" and (s["model"], s["batch"]) == (r["model"], r["batch"])), None)
        vs = f"{r['seconds'] / sd['seconds']:.2f}" if sd and r["how"].startswith("generate") else "-"
        lines.append(f"| {r['model']} | {r['px']} | {r['batch']} | {r['how']} | {r['it_per_s']:.1f} | {r['over_unet']:.2f} | {vs} |")
    return "\n".join(lines)


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
    Path(out).write_text(json.dumps(dict(threads=threads, torch=torch.__version__, rows=rows), indent=1))
    print(overhead_table(rows)); print(f"JSON: {out}")
