"""LoRA against full fine-tuning on the CPU: trainable parameters, seconds per training step and peak memory.

Saves a toy Stable-Diffusion-architecture pipeline (`tiny_sd_pipeline()`, random weights; `--channels` widens its
UNet) and fine-tunes it on the Shapes world through the project's `Trainer`, once per configuration, each in a
subprocess of its own: the whole UNet, and LoRA adapters of rank 4 and 16 on its attention projections, at the same
batch, learning rate and precision, without EMA. Each subprocess times `train_step` after warm-up steps; its peak
RSS comes from `wait4`. The caches are filled once beforehand, so no configuration pays for encoding the images.
Prints one markdown table, ratios against full fine-tuning measured in the same run, and writes JSON.

    python bench/lora_vs_full.py          # channels 128, 64 px, batch 8, 10 timed steps, fastest of 2 rounds (~5 minutes)
    python bench/lora_vs_full.py --channels 32 --resolution 32 --steps 2 --warmup 1 --rounds 1 --out /tmp/lora_vs_full.json  # a check
"""
from __future__ import annotations
import json, shutil, tempfile, time
from pathlib import Path

from fastcore.script import call_parse

from _common import machine_info, markdown_table, run_worker

CONFIGS = {"full fine-tuning": {}, "LoRA r4": dict(lora_rank=4), "LoRA r16": dict(lora_rank=16)}  # TrainConfig fields of each row


def save_model(folder:Path, channels:int):
    "The toy SD-architecture pipeline, its UNet `channels` wide at the first level (twice that at the second), saved to `folder`."
    from diffusers import UNet2DConditionModel
    from text2imagegen.model import tiny_sd_pipeline
    pipe = tiny_sd_pipeline()
    if channels != pipe.unet.config.block_out_channels[0]:
        pipe.register_modules(unet=UNet2DConditionModel.from_config({**pipe.unet.config, "block_out_channels": (channels, 2 * channels)}))
    pipe.save_pretrained(folder)
    return sum(p.numel() for p in pipe.unet.parameters())


def worker(spec:dict):
    "In the subprocess: set up a Trainer, time its steps after warm-up, write the numbers to `spec['out']`."
    import torch
    from text2imagegen.train import TrainConfig, Trainer
    t0 = time.perf_counter()
    trainer = Trainer(TrainConfig(**{"probe_per_category": 0, **spec["config"]}))
    setup = time.perf_counter() - t0
    try:
        for _ in range(spec["warmup"]): trainer.train_step()
        t0 = time.perf_counter()
        for _ in range(spec["steps"]): trainer.train_step()
        seconds = (time.perf_counter() - t0) / max(spec["steps"], 1)
    finally: trainer.release()
    result = dict(trainable=sum(p.numel() for p in trainer.trainable), seconds_per_step=seconds, setup_s=setup, threads=torch.get_num_threads())
    Path(spec["out"]).write_text(json.dumps(result))


def run(spec:dict, work:Path) -> dict:
    "This script's `worker(spec)` in a subprocess: its numbers and peak RSS (MB, from wait4)."
    return run_worker(__file__, spec, work)


def table(rows:list) -> str:
    full = rows[0]
    return markdown_table([[r["how"], r["trainable"], r["trainable"] / full["trainable"], r["seconds_per_step"],
                            r["seconds_per_step"] / full["seconds_per_step"], r["peak_rss_mb"], r["peak_rss_mb"] / full["peak_rss_mb"]]
                           for r in rows], ["training", "trainable params", "vs full", "s/step", "vs full", "peak RSS (MB)", "vs full"])


@call_parse
def main(channels:int=128,                          # UNet width at its first level (tiny_sd_pipeline's is 32)
         resolution:int=64,                         # Training image side in pixels (the VAE halves it)
         batch:int=8,                               # Images per step (every configuration)
         warmup:int=2,                              # Untimed steps first
         steps:int=10,                              # Timed steps
         rounds:int=2,                              # Runs of each configuration, interleaved; the fastest counts
         threads:int=1,                             # torch CPU threads of each subprocess
         mixed_precision:str="no",                  # `no` or `bf16` (bf16 autocast on the CPU is slower than fp32)
         out:str="bench/results/lora_vs_full.json", # JSON of the rows
         worker_spec:str=None,                      # (internal) run one configuration: the spec file written by the parent
):
    "Trainable parameters, seconds per step and peak RSS of full fine-tuning and LoRA r4/r16 on a toy SD-architecture model."
    if worker_spec: return worker(json.loads(Path(worker_spec).read_text()))
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging
    for lib in (diffusers_logging, transformers_logging): lib.disable_progress_bar()
    work = Path(tempfile.mkdtemp(prefix="lora_vs_full-"))
    try:
        t0 = time.perf_counter()
        unet_params = save_model(work / "model", channels)
        base = dict(preset=str(work / "model"), data="shapes", shapes_pool=64, val_size=4, resolution=resolution, batch_size=batch,
                    max_steps=10**6, lr=1e-4, warmup_steps=0, ema_decay=0, mixed_precision=mixed_precision, num_threads=threads,
                    cache_dir=str(work / "cache"), overwrite=True)
        run(dict(config=dict(base, output_dir=str(work / "prepare")), warmup=0, steps=0, out=str(work / "prepare.json")), work)  # fills the caches
        runs = {how: [] for how in CONFIGS}
        for _ in range(rounds):
            for k, (how, fields) in enumerate(CONFIGS.items()):
                runs[how].append(run(dict(config=dict(base, **fields, output_dir=str(work / f"run{k}")), warmup=warmup, steps=steps,
                                          out=str(work / f"run{k}.json")), work))
        rows = [{"how": how, **min(rs, key=lambda r: r["seconds_per_step"]), "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}
                for how, rs in runs.items()]  # the fastest run's time, the largest peak
        full = rows[0]
        for r in rows:
            r.update(trainable_vs_full=r["trainable"] / full["trainable"], time_vs_full=r["seconds_per_step"] / full["seconds_per_step"],
                     rss_vs_full=r["peak_rss_mb"] / full["peak_rss_mb"])
        result = dict(channels=channels, unet_params=unet_params, resolution=resolution, batch=batch, warmup=warmup, steps=steps,
                      rounds=rounds, threads=threads, mixed_precision=mixed_precision, machine=machine_info(), seconds=time.perf_counter() - t0, rows=rows)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1))
        print(f"UNet: {unet_params:,} parameters (channels {channels}); {resolution} px, batch {batch}, {threads} thread(s), "
              f"mixed precision {mixed_precision}; {steps} timed steps after {warmup}, fastest of {rounds} round(s)\n")
        print(table(rows))
        print(f"\n{result['seconds']:.0f} s in all; JSON: {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
