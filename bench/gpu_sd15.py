"""Stable Diffusion 1.5 on one GPU: training images/s and sampling iterations/s, the project against diffusers' way.

No downloads: the SD 1.5 architecture (its UNet, CLIP ViT-L/14 text encoder and VAE, from their exact configs) gets
random weights and is saved as a pipeline folder, which every row loads as a user's model would be loaded. Speed and
memory do not depend on the weights' values. Data: landscape 640x480 JPEGs with captions, in an imagefolder.

Training (bf16 mixed precision, AdamW, no EMA, the same batch in every row), at 256 and 512 px:
- `reference`: what diffusers' `train_text_to_image.py` does every step (`bench/train_throughput.py`'s reference):
  tokenize and CLIP-encode the captions, VAE-encode the images (already decoded, on the GPU), UNet step, AdamW.
- `trainer`: the project's `Trainer.train_step`, caption states and latents read from its disk caches; also with
  gradient checkpointing, with aspect-ratio buckets (the 4:3 images train at 576x448 instead of 512x512 crops), and
  with LoRA adapters (rank 4, attention projections) instead of the full UNet.
Sampling at 512 px, 50 steps, guidance 7.5, DPM++ 2M, bf16 weights, batch 1 and 8: the project's `generate` against
diffusers' `StableDiffusionPipeline` built on the same component objects, and the UNet alone (50 batched
classifier-free-guidance forwards, no text encoding, scheduler or decoding) as the floor of both; then `generate`
with the UNet compiled by `torch.compile`, as `t2i-sample --compile` does (with --compile; the largest batch only).

Utilisation: the FLOPs of one training image are counted once, on the meta device, with torch's `FlopCounterMode`
(3 × the UNet's forward at the row's size: the backward costs two forwards; SD 1.5 at 512 px: 2.41 TFLOP); a training
row's TFLOP/s is that × its images/s, given as a share of the card's data-sheet dense bf16 peak (`DATASHEET_BF16`) and
of a measured bf16 8192³ matmul.

With --full, also: the cached trainer at batch 16, 32 and 64 (512 px); at batch 8, its speed options (fused AdamW,
channels-last, the UNet compiled by torch.compile, all three; `SPEED_OPTIONS`); and per memory saver (gradient checkpointing,
8-bit AdamW, EMA on the CPU, all three, LoRA) the largest batch (doubling from 1 up to 64) that trains within 24 GB,
the memory of a consumer card (`torch.cuda.set_per_process_memory_fraction`), with its speed.

Prints one table and writes JSON.

    python bench/gpu_sd15.py --full --compile  # on a GPU, the SD 1.5 architecture, every row
    python bench/gpu_sd15.py --compile         # on a GPU, without the batch sweep and the 24 GB rows
    python bench/gpu_sd15.py --smoke --full    # on the CPU, the same code with a tiny SD-architecture model (about a minute)
"""
from __future__ import annotations
import json, os, shutil, tempfile, time, traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from fastcore.script import call_parse

from _common import machine_info, markdown_table, reference_row, reset_memory, sampling_rows, sync, trainer_row, write_images


def sd15_architecture():
    "A random-weight pipeline with SD 1.5's UNet, CLIP ViT-L/14 text encoder and VAE configs (a small byte-level tokenizer)."
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel
    from text2imagegen.model import PIPELINE_PRESETS, Text2ImagePipeline, make_noise_scheduler, make_unet, tiny_clip_tokenizer
    tok = tiny_clip_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
                                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, norm_num_groups=32,
                        sample_size=512, scaling_factor=0.18215)
    preset = PIPELINE_PRESETS["sd15"]
    return Text2ImagePipeline(unet=make_unet("sd15"), scheduler=make_noise_scheduler(**preset["scheduler"]), text_encoder=text,
                              tokenizer=tok, vae=vae, sample_defaults=preset["sample_defaults"])


def measured(f, *args, **kwargs):
    "`f(*args, **kwargs)`, or {'error': ...} when it fails: one failing row does not cost the others."
    try: return f(*args, **kwargs)
    except Exception as e:
        traceback.print_exc()
        return dict(error=f"{type(e).__name__}: {e}"[:300])


# dense bf16 tensor-core peaks (TFLOP/s) of the cards' data sheets, by a name `torch.cuda.get_device_name` contains
DATASHEET_BF16 = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0}


def train_flops_per_image(model:Path, px:int) -> float:
    "FLOPs of one training image at `px`: 3 × the UNet's forward (the backward costs two), counted once on the meta device."
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode
    config = UNet2DConditionModel.load_config(model / "unet")
    latent = px // (2 ** (len(json.loads((model / "vae" / "config.json").read_text())["block_out_channels"]) - 1))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
        x = torch.randn(1, config["in_channels"], latent, latent)
        text = torch.randn(1, 77, config["cross_attention_dim"])
        with FlopCounterMode(display=False) as counter: unet(x, torch.tensor([500]), encoder_hidden_states=text)
    return 3.0 * counter.get_total_flops()


def matmul_tflops(device, dtype, n:int) -> float:
    "Sustained TFLOP/s of an n×n×n matmul in `dtype` on `device` (the best of 5 timed rounds)."
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(6):
        sync(device); t0 = time.perf_counter()
        for _ in range(10): a @ b
        sync(device); best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * n ** 3 / best / 1e12


def peaks(device, name:str, smoke:bool) -> dict:
    "The card's data-sheet bf16 peak (None if unknown) and the measured bf16 (CPU smoke: float32) matmul TFLOP/s."
    sheet = next((v for k, v in DATASHEET_BF16.items() if k in name), None) if device.type == "cuda" else None
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    return dict(datasheet_tflops=sheet, measured_tflops=matmul_tflops(device, dtype, 512 if smoke else 8192),
                measured_dtype=str(dtype).removeprefix("torch."))


def add_utilisation(rows:list, flops:dict, peak:dict):
    "Per training row: TFLOP/s (FLOPs per image × images/s) and its share of the data-sheet and of the measured peak."
    for r in rows:
        if r["task"] != "train" or "error" in r or "skipped" in r or r["px"] not in flops: continue
        r["tflops"] = r["images_per_s"] * flops[r["px"]] / 1e12
        r["util_measured"] = r["tflops"] / peak["measured_tflops"]
        if peak["datasheet_tflops"]: r["util_datasheet"] = r["tflops"] / peak["datasheet_tflops"]


def largest_batch(try_batch, cap:int) -> tuple:
    "(largest batch ≤ cap, doubling from 1, for which `try_batch(b)` ran without running out of memory; its row)."
    best, row, b = 0, None, 1
    while b <= cap:
        try: got = try_batch(b)
        except torch.cuda.OutOfMemoryError: break
        if "error" in got:
            if "out of memory" in got["error"].lower(): break
            return best, got
        best, row, b = b, got, b * 2
    return best, row


def table(rows:list, device_name:str) -> str:
    cells = []
    for r in rows:
        peak = r.get("peak_gb")
        if "error" in r: cells.append([r["task"], r["how"], r["px"], r["batch"], f"failed: {r['error']}", "", "", "", "", ""])
        elif "skipped" in r: cells.append([r["task"], r["how"], r["px"], r["batch"], f"skipped: {r['skipped']}", "", "", "", "", ""])
        elif r["task"] != "sample":
            ratio = f"{r['vs_reference']:.2f}x the reference" if "vs_reference" in r else None
            util = (f"{r['tflops']:.1f} ({r['util_datasheet']:.0%} of the data sheet)" if "util_datasheet" in r else
                    f"{r['tflops']:.3g} ({r['util_measured']:.0%} of the measured matmul)" if "tflops" in r else None)
            cells.append([r["task"], r["how"], r["px"], r["batch"], f"{r['images_per_s']:.2f} images/s", ratio, util, r["trainable"], peak,
                          r["setup_s"]])
        else:
            compiling = f"{r['compile_s']:.0f} (compiling)" if "compile_s" in r else None
            cells.append([r["task"], r["how"], r["px"], r["batch"], f"{r['it_per_s']:.2f} it/s", f"{r['over_unet']:.2f}x the UNet's time",
                          None, None, peak, compiling])
    return f"device: {device_name}\n\n" + markdown_table(cells, ["task", "how", "px", "batch", "speed", "ratio", "TFLOP/s (utilisation)",
                                                                 "trainable params", "peak GPU memory (GB)", "set-up (s)"])


SPEED_OPTIONS = {"trainer + fused AdamW": dict(optimizer="adamw_fused"), "trainer + channels-last": dict(channels_last=True),
                 "trainer + compiled UNet": dict(compile_unet=True),
                 "trainer + all three": dict(optimizer="adamw_fused", channels_last=True, compile_unet=True)}
SAVERS = {"full fine-tuning": {}, "+ gradient checkpointing": dict(gradient_checkpointing=True),
          "+ 8-bit AdamW": dict(optimizer="adamw8bit"), "+ EMA on the CPU": dict(ema_decay=0.9999, ema_device="cpu"),
          "+ all three": dict(gradient_checkpointing=True, optimizer="adamw8bit", ema_decay=0.9999, ema_device="cpu"),
          "LoRA r4": dict(lora_rank=4, lr=1e-4), "LoRA r4 + gradient checkpointing": dict(lora_rank=4, lr=1e-4, gradient_checkpointing=True)}


def memory_rows(model, data, work, px:int, device, warmup:int, steps:int, memory_gb:float, smoke:bool) -> list:
    "Per memory saver: the largest batch (doubling up to 64) that trains within `memory_gb` of GPU memory, with its speed."
    rows, cap = [], 2 if smoke else 64  # on the CPU there is no cap to find: the search only runs
    if device.type == "cuda": torch.cuda.set_per_process_memory_fraction(min(1.0, memory_gb * 2**30 / torch.cuda.get_device_properties(0).total_memory))
    try:
        for how, settings in SAVERS.items():
            if settings.get("optimizer") == "adamw8bit" and device.type == "cpu":
                rows.append(dict(task=f"memory ({memory_gb:g} GB)", how=how, px=px, batch="-", skipped="bitsandbytes' 8-bit AdamW needs CUDA")); continue
            best, row = largest_batch(lambda b: measured(trainer_row, model, data, work, px, b, device, warmup, steps, **settings), cap)
            rows.append(dict(task=f"memory ({memory_gb:g} GB)", how=how, px=px, batch=best, **(row or dict(error="batch 1 does not fit"))))
    finally:
        if device.type == "cuda": torch.cuda.set_per_process_memory_fraction(1.0)
    return rows


@call_parse
def main(smoke:bool=False,                      # Tiny SD-architecture model on the CPU, few steps: checks the script in under a minute
         out:str="bench/results/gpu_sd15.json", # JSON of every row
         steps:int=10,                          # Timed training steps per row (after 3 warm-up steps)
         batch:int=8,                           # Training batch size (every row)
         images:int=80,                         # Training images written
         compile:bool=False,                    # Also time `generate` with the UNet compiled (a minute or two of compiling)
         full:bool=False,                       # Also the batch sweep (16, 32, 64) and the largest batches that fit in 24 GB per memory saver
         memory_gb:float=24,                    # The memory cap of the 24 GB rows (a consumer card)
):
    "Training and sampling speed of SD 1.5 on this GPU: the project's trainer and pipeline against diffusers' way."
    device = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not smoke: raise SystemExit("No GPU here: run with --smoke to check the script on the CPU")
    from text2imagegen.model import tiny_sd_pipeline
    sizes, sample_px, sample_steps, warmup = ((32, 64), 64, 4, 1) if smoke else ((256, 512), 512, 50, 3)
    steps, batch, images = (2, 2, 12) if smoke else (steps, batch, images)
    work = Path(tempfile.mkdtemp(prefix="gpu_sd15-"))
    try:
        model, data = work / "model", work / "images"
        t0 = time.perf_counter()
        with torch.device(device):  # random init on the GPU: seconds instead of a minute on the CPU
            pipe = tiny_sd_pipeline() if smoke else sd15_architecture()
        pipe.save_pretrained(model); del pipe; reset_memory(device)
        try:
            import datasets  # reads the imagefolder
            captions = write_images(data, images, (80, 60) if smoke else (640, 480))
        except ImportError:
            print("`datasets` cannot be imported here: training on the Shapes world instead of an imagefolder")
            data = "shapes"
            from text2imagegen.data import ShapesWorld
            captions = [ShapesWorld(resolution=32)[i]["caption"] for i in range(images)]
        print(f"SD-architecture model and {images} images ({data}) written in {time.perf_counter() - t0:.0f} s", flush=True)
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke: tiny SD-architecture model)"
        flops = {px: train_flops_per_image(model, px) for px in sizes}  # counted once, on the meta device
        peak = peaks(device, name, smoke)
        print(f"training FLOPs per image: {', '.join(f'{px} px {f / 1e12:.3g} TFLOP' for px, f in flops.items())}; peak: data sheet "
              f"{peak['datasheet_tflops']} TFLOP/s, measured {peak['measured_dtype']} matmul {peak['measured_tflops']:.1f} TFLOP/s", flush=True)
        rows = []
        for px in sizes:
            ref = measured(reference_row, model, data, px, batch, device, warmup, steps)
            rows.append(dict(task="train", how="reference (encode VAE + CLIP every step)", px=px, batch=batch, **ref))
            ways = {"trainer (cached latents + captions)": {},
                    "trainer + gradient checkpointing": dict(gradient_checkpointing=True),
                    "trainer + aspect-ratio buckets": dict(buckets=True),
                    "trainer + LoRA r4": dict(lora_rank=4, lr=1e-4),
                    "trainer + LoRA r4 + gradient checkpointing": dict(lora_rank=4, lr=1e-4, gradient_checkpointing=True)}
            for how, settings in ways.items():
                if ("LoRA" in how or "buckets" in how) and px != sizes[-1]: continue
                rows.append(dict(task="train", how=how, px=px, batch=batch,
                                 **measured(trainer_row, model, data, work, px, batch, device, warmup, steps, **settings)))
            for r in rows:
                if r["px"] == px and "error" not in r and "error" not in ref: r["vs_reference"] = r["images_per_s"] / ref["images_per_s"]
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps(dict(partial=True, rows=rows), indent=1))  # kept if a later part is cut short
            print(f"training at {px} px done ({time.perf_counter() - t0:.0f} s)", flush=True)
        if full:
            px, cached = sizes[-1], "trainer (cached latents + captions)"
            for b in ([4] if smoke else [16, 32, 64]):  # the batch sweep: does a larger batch fill the GPU better?
                rows.append(dict(task="train", how=cached, px=px, batch=b,
                                 **measured(trainer_row, model, data, work, px, b, device, warmup, steps)))
            for how, settings in SPEED_OPTIONS.items():  # each against the cached trainer at the same batch
                if "compile_unet" in settings and device.type == "cpu":
                    rows.append(dict(task="train", how=how, px=px, batch=batch, skipped="inductor takes minutes on the CPU")); continue
                rows.append(dict(task="train", how=how, px=px, batch=batch,
                                 **measured(trainer_row, model, data, work, px, batch, device, warmup, steps, **settings)))
                ref = next(r for r in rows if r["how"].startswith("reference") and r["px"] == px)
                if "error" not in rows[-1] and "error" not in ref: rows[-1]["vs_reference"] = rows[-1]["images_per_s"] / ref["images_per_s"]
            rows += memory_rows(model, data, work, px, device, warmup, steps, memory_gb, smoke)
            Path(out).write_text(json.dumps(dict(partial=True, rows=rows), indent=1))
            print(f"batch sweep and memory rows done ({time.perf_counter() - t0:.0f} s)", flush=True)
        add_utilisation(rows, flops, peak)
        sampled = measured(sampling_rows, model, sample_px, [1, 2] if smoke else [1, 8], sample_steps, device, captions, torch.bfloat16, rounds=2)
        rows += sampled if isinstance(sampled, list) else [dict(task="sample", how="all", px=sample_px, batch="-", **sampled)]
        Path(out).write_text(json.dumps(dict(partial=True, rows=rows), indent=1))
        if compile:  # the largest batch only: compiling takes a minute or more per shape
            compiled = measured(sampling_rows, model, sample_px, [2 if smoke else 8], sample_steps, device, captions, torch.bfloat16, True, rounds=2)
            rows += [r for r in compiled if "compile" in r["how"]] if isinstance(compiled, list) else [
                dict(task="sample", how="generate + torch.compile", px=sample_px, batch="-", **compiled)]
        machine = machine_info()
        result = dict(device=name, torch=torch.__version__, cuda=torch.version.cuda, machine=machine, smoke=smoke, full=full,
                      train_flops_per_image=flops, peak=peak, data="shapes" if data == "shapes" else "imagefolder 640x480 JPEGs", seconds=time.perf_counter() - t0, rows=rows)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1))
        print(table(rows, name))
        print(f"{result['seconds']:.0f} s in all; JSON: {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
