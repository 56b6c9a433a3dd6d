"""Training throughput: the project's trainer against the step diffusers' example takes, same model, data and batch.

The reference does per step what diffusers' `train_text_to_image.py` does: tokenize and encode the captions with the
frozen text encoder, encode the images (VAE latents, or pixel-unshuffled pixels for a pixel-space model; the images
are decoded once, so data loading costs it nothing), then the UNet forward and backward and an AdamW step. The
trainer row is `Trainer.train_step`, reading caption states and latents from its disk caches. Both after warm-up
steps, one after the other in one process. Prints images/s and the ratio, and writes JSON.

    python bench/train_throughput.py          # the tiny preset at 32 px; a small SD-architecture model at 64 and 128 px
"""
from __future__ import annotations
import json, os, tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from fastcore.script import call_parse

from _common import machine_info, markdown_table, reference_row, trainer_row, write_images


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
    Path(out).write_text(json.dumps(dict(threads=threads, torch=torch.__version__, machine=machine_info(), rows=rows), indent=1))
    print(markdown_table(rows, ["model", "px", "batch", "reference", "trainer", "ratio"],
                         {"reference": "reference (images/s)", "trainer": "trainer (images/s)", "ratio": "trainer / reference"}))
    print(f"JSON: {out}")
