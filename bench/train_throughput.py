"""Training throughput: the project's trainer against the step diffusers' example takes, same model, data and batch.

The reference does per step what diffusers' `train_text_to_image.py` does: tokenize and encode the captions with the
frozen text encoder, encode the images (VAE latents, or pixel-unshuffled pixels for a pixel-space model; the images
are decoded once, so data loading costs it nothing), then the UNet forward and backward and an AdamW step. The
trainer row is `Trainer.train_step`, reading caption states and latents from its disk caches. Both after warm-up
steps, one after the other in one process. Prints images/s and the ratio, and writes JSON.

    python bench/train_throughput.py          # the tiny preset at 32 px; a small SD-architecture model at 64 and 128 px
"""
from __future__ import annotations
import json, os, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np, torch
import torch.nn.functional as F
from fastcore.script import call_parse
from PIL import Image
from sample_overhead import peak_gb, reset_memory, sync  # bench/, beside this script


def write_images(folder:Path, n:int, size:tuple) -> list:
    "`n` smooth random landscape JPEGs with captions in an imagefolder (metadata.jsonl); returns the captions."
    rng, captions = np.random.default_rng(0), []
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.jsonl", "w") as meta:
        for k in range(n):
            small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize(size, Image.BICUBIC).save(folder / f"{k:05d}.jpg", quality=90)
            captions.append(f"a photo of a {['red', 'green', 'blue'][k % 3]} {['circle', 'square', 'triangle'][k // 3 % 3]} number {k}")
            meta.write(json.dumps({"file_name": f"{k:05d}.jpg", "text": captions[-1]}) + "\n")
    return captions


def first_images(data:str|Path, n:int, resolution:int) -> tuple:
    "The first `n` images of `data` (an imagefolder from `write_images`, or `shapes`) as PIL images, and their captions."
    if data == "shapes":
        from text2imagegen.data import ShapesWorld
        world = ShapesWorld(resolution=resolution)
        return [world[i]["image"] for i in range(n)], [world[i]["caption"] for i in range(n)]
    rows = [json.loads(line) for line in (Path(data) / "metadata.jsonl").read_text().splitlines()[:n]]
    return [Image.open(Path(data) / r["file_name"]) for r in rows], [r["text"] for r in rows]


def timed_steps(step, device, warmup:int, steps:int) -> float:
    "Seconds per call of `step` after `warmup` calls; peak memory counts from the first warm-up call."
    reset_memory(device)
    for _ in range(warmup): step()
    sync(device); t0 = time.perf_counter()
    for _ in range(steps): step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def trainer_row(model:Path, data:Path, work:Path, resolution:int, batch:int, device, warmup:int, steps:int,
                mixed_precision:str="bf16", **settings) -> dict:
    "Images/s of the project's `Trainer.train_step` on `model` with `settings` (TrainConfig fields)."
    from text2imagegen.train import TrainConfig, Trainer
    t0 = time.perf_counter()
    shapes = dict(shapes_pool=64) if data == "shapes" else {}
    cfg = TrainConfig(**{**dict(preset=str(model), data=str(data), **shapes, resolution=resolution, batch_size=batch, max_steps=10_000, lr=1e-5,
                              mixed_precision=mixed_precision, ema_decay=0, val_size=4, cache_dir=str(work / "cache"), overwrite=True,
                              output_dir=str(work / "run")), **settings})
    trainer = Trainer(cfg)
    setup = time.perf_counter() - t0
    try:
        trainable = sum(p.numel() for p in trainer.trainable)
        seconds = timed_steps(trainer.train_step, device, warmup, steps)
        return dict(images_per_s=batch / seconds, peak_gb=peak_gb(device), trainable=trainable, setup_s=setup)
    finally:
        trainer.release(); del trainer; reset_memory(device)


def reference_row(model:Path, data:Path, resolution:int, batch:int, device, warmup:int, steps:int,
                  mixed_precision:str="bf16") -> dict:
    "Images/s of the step diffusers' `train_text_to_image.py` takes: tokenize and encode the captions, encode the images, then the UNet step."
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from diffusers import DDPMScheduler
    from text2imagegen.data import ImageTransform
    from text2imagegen.model import load_pipeline
    from text2imagegen.train import training_target
    t0 = time.perf_counter()
    AcceleratorState._reset_state()
    acc = Accelerator(mixed_precision=mixed_precision, cpu=device.type == "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)
    pipe = load_pipeline(model)
    for frozen in (pipe.text_encoder, pipe.vae):  # the frozen encoders in the compute dtype, as diffusers casts them
        if frozen is not None: frozen.to(device, dtype)
    if pipe.text_whitening is not None: pipe.text_whitening.to(device)
    unet = pipe.unet.requires_grad_(True).train()
    trainable = sum(p.numel() for p in unet.parameters())
    unet, opt = acc.prepare(unet, torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=1e-2))
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    images, captions = first_images(data, batch, resolution)
    pixels = torch.stack([ImageTransform(resolution)(im) for im in images]).to(device)  # decoded once: only the encoders are timed
    setup = time.perf_counter() - t0
    g = torch.Generator(device).manual_seed(0)

    def step():
        with torch.no_grad():
            hidden, pooled = pipe.encode_prompt(captions)  # tokenize and encode, every step
            x0 = pipe.to_model_space(pixels, sample=True, generator=g).float()  # VAE-encode (or pixel-unshuffle), every step
        noise = torch.randn(x0.shape, generator=g, device=device)
        t = torch.randint(0, training_noise_scheduler.config.num_train_timesteps, (batch,), generator=g, device=device)
        with acc.autocast():
            pred = pipe.predict(noise_scheduler.add_noise(x0, noise, t), t, hidden.to(device), None if pooled is None else pooled.to(device), unet=unet)
        loss = F.mse_loss(pred.float(), training_target(training_noise_scheduler, x0, noise, t).float())
        acc.backward(loss); acc.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)

    try:
        seconds = timed_steps(step, device, warmup, steps)
        return dict(images_per_s=batch / seconds, peak_gb=peak_gb(device), trainable=trainable, setup_s=setup)
    finally:
        del pipe, unet, opt, pixels; reset_memory(device)



def small_sd_pipeline():
    "An SD-architecture pipeline (CLIP text encoder, VAE, latent UNet) between the toy and the real size, random weights."
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    from text2imagegen.model import PIPELINE_PRESETS, Text2ImagePipeline, make_noise_scheduler, tiny_clip_tokenizer
    tok = tiny_clip_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, projection_dim=256))
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(32, 64, 128, 128), layers_per_block=1, latent_channels=4, norm_num_groups=32, sample_size=128)
    unet = UNet2DConditionModel(sample_size=16, block_out_channels=(64, 128, 256), layers_per_block=1, cross_attention_dim=256, attention_head_dim=8,
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=32)
    preset = PIPELINE_PRESETS["sd15"]
    return Text2ImagePipeline(unet=unet, scheduler=make_noise_scheduler(**preset["scheduler"]), text_encoder=text, tokenizer=tok,
                              vae=vae, sample_defaults=preset["sample_defaults"])


@call_parse
def main(steps:int=10,                                  # Timed steps per row (after 2 warm-up steps)
         threads:int=2,                                 # CPU threads for torch
         out:str="bench/results/train_throughput.json", # JSON of every row
):
    "Images/s of the trainer and of diffusers' per-step encoding, on the tiny preset and a small SD-architecture model."
    from text2imagegen.model import build_pipeline
    torch.set_num_threads(threads)
    device, rows = torch.device("cpu"), []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        build_pipeline("tiny").save_pretrained(work / "tiny")
        small_sd_pipeline().save_pretrained(work / "small-sd")
        write_images(work / "images", 64, (160, 120))
        cases = [("tiny preset (Shapes, pixels)", work / "tiny", "shapes", 32, 32), ("small SD architecture", work / "small-sd", work / "images", 64, 8),
                 ("small SD architecture", work / "small-sd", work / "images", 128, 8)]
        for name, model, data, px, batch in cases:
            ref = reference_row(model, data, px, batch, device, 2, steps, "no")
            ours = trainer_row(model, data, work, px, batch, device, 2, steps, "no", num_threads=threads)
            rows.append(dict(model=name, px=px, batch=batch, reference=ref["images_per_s"], trainer=ours["images_per_s"],
                             ratio=ours["images_per_s"] / ref["images_per_s"], setup_s=ours["setup_s"]))
            print(f"{name} at {px} px: {rows[-1]['ratio']:.2f}x", flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(dict(threads=threads, torch=torch.__version__, rows=rows), indent=1))
    print("| model | px | batch | reference (images/s) | trainer (images/s) | trainer / reference |\n|---|---|---|---|---|---|")
    for r in rows: print(f"| {r['model']} | {r['px']} | {r['batch']} | {r['reference']:.1f} | {r['trainer']:.1f} | {r['ratio']:.2f} |")
    print(f"JSON: {out}")
