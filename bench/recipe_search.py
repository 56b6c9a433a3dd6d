"""Recipe search for the offline default: train candidate recipes to equal numbers of images seen and score them.

    python bench/recipe_search.py --recipes baseline,attn8 --images 20000,40000,80000
    python bench/recipe_search.py --list                 # the candidate recipes

Every recipe is data (`RECIPES`): TrainConfig fields, UNet overrides and the training mix of scene kinds. Each one is
trained with `text2imagegen.train` (the real loop) for a fixed number of optimizer steps, the EMA model is saved when
given numbers of images have been seen, and each snapshot is scored with the adherence benchmark (fixed prompts and
seeds). Quality is compared against images seen (independent of CPU contention); speed is measured separately with
`--speed` (training images/s of each recipe, interleaved, so the ratios hold on a busy machine) to turn images into minutes.
Results are appended to `bench/results/recipes.jsonl` and tabulated in `bench/results/recipes.csv`.
"""
from __future__ import annotations
import csv, json, os, time
from pathlib import Path

import torch
from fastcore.script import call_parse

import text2imagegen.train as T
from text2imagegen.judge import load_judge
from text2imagegen.model import build_pipeline

from _common import score_point, train_with_snapshots

TINY_ATTN_8_AND_4 = dict(  # cross-attention at 8x8 and 4x4, the tiny preset's layout (a no-op on the preset itself)
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))

P4_ATTN_ALL = dict(  # pixel-unshuffle by 4 (32x32x3 -> 8x8x48): cross-attention at 8x8, 4x4 and 2x2
    pixel_shuffle=4, down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3)

RECIPES = {  # name -> {"config": TrainConfig fields, "unet": UNet overrides, "kind_weights": train mix}
    "baseline": {},  # the defaults: TrainConfig, UNET_PRESETS["tiny"], PIPELINE_PRESETS["tiny"]
    "attn8": {"unet": TINY_ATTN_8_AND_4},
    "mix_hard": {"kind_weights": {"single": 1, "relation": 2, "count": 1.5}},
    "attn8_mix": {"unet": TINY_ATTN_8_AND_4, "kind_weights": {"single": 1, "relation": 2, "count": 1.5}},
    "lr3e-3": {"config": {"lr": 3e-3}},
    "batch64": {"config": {"batch_size": 64}},
    "wide96": {"unet": {"block_out_channels": (96, 96, 96), "attention_head_dim": 6}},
    "attn8_heads8": {"unet": {**TINY_ATTN_8_AND_4, "attention_head_dim": 8}},
    "ema995": {"config": {"ema_decay": 0.995}},
    "batch16": {"config": {"batch_size": 16}},  # twice the optimizer steps per image seen
    "attn8_b16": {"unet": TINY_ATTN_8_AND_4, "config": {"batch_size": 16}},
    "attn8_plain_v": {"unet": TINY_ATTN_8_AND_4, "config": {"min_snr_gamma": None}},  # unweighted v-MSE: more weight on high noise (layout)
    "p4_96": {"unet": {**P4_ATTN_ALL, "block_out_channels": (96, 96, 96), "attention_head_dim": 6}},
    "p4_128": {"unet": {**P4_ATTN_ALL, "block_out_channels": (128, 128, 128), "attention_head_dim": 8}},
    "p4_128_plain_v": {"unet": {**P4_ATTN_ALL, "block_out_channels": (128, 128, 128), "attention_head_dim": 8},
                       "config": {"min_snr_gamma": None}},
    "attn8_lpb1": {"unet": {**TINY_ATTN_8_AND_4, "layers_per_block": 1}},
    "heads4": {"unet": {"attention_head_dim": 4}},  # 4 heads of 16 channels (the preset: 8 heads of 8)
    "heads16": {"unet": {"attention_head_dim": 16}},  # 16 heads of 4 channels
    "tlpb2": {"unet": {"transformer_layers_per_block": 2}},  # two attention layers per cross-attention block
    "no_self_attn": {"unet": {"only_cross_attention": True}},  # both attentions of every down/up transformer block attend to the text (as in the preset)
    "self_attn": {"unet": {"only_cross_attention": False}},  # self-attention, then cross-attention, in every down/up transformer block
    "raw_text": {"config": {"text_whitening": 0}},  # MiniLM's token states as they are, not whitened
}


def _tuples(d:dict) -> dict:
    "JSON lists back to the tuples diffusers configs use."
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}




def run_recipe(name:str, recipe:dict, images:list, out:Path, judge, threads:int, per_category:int, n_per_prompt:int,
               categories, guidance:list, batch_size:int|None=None) -> list:
    "Train `recipe` to max(images) images seen with snapshots at `images`; score each snapshot. One row per (snapshot, guidance, category)."
    cfg = {**dict(max_minutes=0, num_threads=threads, val_every=10**9, checkpoint_every=10**9, output_dir=str(out / name),
                  unet=_tuples(recipe.get("unet", {})), kind_weights=recipe.get("kind_weights")), **recipe.get("config", {})}
    per_step = cfg.get("batch_size", T.PRESET_TRAIN_DEFAULTS["tiny"]["batch_size"])
    cfg["max_steps"] = -(-max(images) // per_step)
    t0 = time.time()  # rendered pools are fast; captions come from the trainer's own disk cache after the first recipe
    trained = train_with_snapshots(T.TrainConfig(**{"probe_per_category": 0, **cfg}), images=[m for m in images if m < max(images)])
    wall = time.time() - t0
    rows = []
    for p in trained["points"]:
        for r in score_point(p["path"], guidance, judge, n_per_prompt, per_category, categories):
            rows.append(dict(recipe=name, images_seen=p["images_seen"], step=p["step"], **r,
                             train_images_per_s=trained["timing"]["images_per_s_median"], load_avg=os.getloadavg()[0]))
        print(f"{name} @ {p['images_seen']} images: " + ", ".join(f"{r['category']} {r['score']:.2f}" for r in rows
                                                                  if r["images_seen"] == p["images_seen"] and r["guidance"] == guidance[0]), flush=True)
    print(f"{name}: trained {trained['points'][-1]['images_seen']} images in {wall / 60:.1f} min (load avg {os.getloadavg()[0]:.1f})")
    return rows


def rescore_runs(name:str, out:Path, judge, per_category:int, n_per_prompt:int, categories, guidance:list) -> list:
    "Score every snapshot and the final model of a finished recipe run (images seen = step x batch size)."
    run = out / name
    bs = json.loads((run / "config.json").read_text())["batch_size"]
    folders = sorted((run / "snapshots").glob("step_*")) + [f for f in [run / "model"] if (f / "model_index.json").is_file()]
    log = T.read_log(run / "log.csv")
    rows = []
    for f in folders:
        step = int(f.name.split("_")[1]) if f.name.startswith("step_") else int(log[-1]["step"])
        for r in score_point(str(f), guidance, judge, n_per_prompt, per_category, categories):
            rows.append(dict(recipe=name, images_seen=step * bs, step=step, **r, load_avg=os.getloadavg()[0]))
        print(f"{name} @ {step * bs} images: " + ", ".join(f"{r['category']} {r['score']:.2f} {r['clauses']}" for r in rows if r["step"] == step), flush=True)
    return rows


def speed_test(names:list, threads:int, seconds:float=20, rounds:int=3) -> dict:
    "Training images/s of each recipe's UNet and batch, measured interleaved (round-robin) so contention hits all alike."
    torch.set_num_threads(threads)
    models = {}
    for n in names:
        r = RECIPES[n]
        pipe = build_pipeline("tiny", **_tuples(r.get("unet", {})))
        pipe.unet.train()
        bs = r.get("config", {}).get("batch_size", T.PRESET_TRAIN_DEFAULTS["tiny"]["batch_size"])
        opt = torch.optim.AdamW(pipe.unet.parameters(), 1e-4)
        models[n] = (pipe, opt, bs, [0, 0.0])
    sched = T.training_noise_scheduler(next(iter(models.values()))[0])
    g = torch.Generator().manual_seed(0)
    for _ in range(rounds):
        for n, (pipe, opt, bs, acc) in models.items():
            c, side = pipe.unet.config.out_channels, pipe.unet.config.sample_size
            x0 = torch.randn(bs, c, side, side, generator=g)
            h, p = pipe.encode_prompt(["a large red circle on the left"] * bs)  # the text context's real shape (20 tokens for MiniLM)
            t_end, k, t0 = time.time() + seconds / rounds, 0, time.time()
            while time.time() < t_end:
                loss = T.batch_loss(pipe, pipe.unet, sched, x0, h, p, torch.randn_like(x0), torch.randint(0, 1000, (bs,)), 5.0)
                loss.backward(); opt.step(); opt.zero_grad(); k += 1
            acc[0] += k * bs; acc[1] += time.time() - t0
    base = models[names[0]][3]
    res = {n: {"images_per_s": a[0] / a[1], "ratio_to_" + names[0]: (a[0] / a[1]) / (base[0] / base[1]),
               "params_M": sum(q.numel() for q in pipe.unet.parameters()) / 1e6} for n, (pipe, _, _, a) in models.items()}
    return res


@call_parse
def main(
    recipes:str="baseline,attn8", # Comma-separated names of RECIPES
    images:str="16000,32000", # Images seen at which to score (the run stops at the largest)
    threads:int=1, # CPU threads (1 avoids OpenMP oversubscription on a shared machine)
    per_category:int=20, # First n prompts of each benchmark category
    n_per_prompt:int=1, # Benchmark images per prompt
    categories:str="single,held-out,relation,counting", # Benchmark categories
    guidance:str="1", # Guidance scales
    out:str="bench/results/recipes", # Folder for runs; results go to bench/results/recipes.jsonl / .csv
    rescore:bool=False, # Only (re)score the saved snapshots and models of the recipes' runs in --out
    speed:bool=False, # Only measure training images/s of the recipes (interleaved) and exit
    speed_seconds:float=30, # Seconds per recipe for --speed
    list:bool=False, # Print the recipes and exit
):
    "Train and score candidate recipes at equal images seen."
    names = [n.strip() for n in recipes.split(",") if n.strip()]
    if list: print(json.dumps(RECIPES, indent=1, default=str)); return
    bad = [n for n in names if n not in RECIPES]
    if bad: raise ValueError(f"Unknown recipes {bad}; accepted: {tuple(RECIPES)}")
    results = Path("bench/results"); results.mkdir(parents=True, exist_ok=True)
    if speed:
        load0 = os.getloadavg()[0]
        res = speed_test(names, threads, speed_seconds)
        rec = {"kind": "speed", "threads": threads, "load_avg": [load0, os.getloadavg()[0]], "time": time.strftime("%H:%M UTC", time.gmtime()), "results": res}
        with open(results / "recipes_speed.jsonl", "a") as f: f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec, indent=1)); print(f"appended to {results / 'recipes_speed.jsonl'}")
        return
    torch.set_num_threads(threads)
    judge = load_judge()
    marks = sorted(int(float(x)) for x in images.split(","))
    for n in names:
        if rescore:
            rows = rescore_runs(n, Path(out), judge, per_category, n_per_prompt, [c.strip() for c in categories.split(",")],
                                [float(g) for g in guidance.split(",")])
        else: rows = run_recipe(n, RECIPES[n], marks, Path(out), judge, threads, per_category, n_per_prompt,
                          [c.strip() for c in categories.split(",")], [float(g) for g in guidance.split(",")])
        with open(results / "recipes.jsonl", "a") as f:
            for r in rows: f.write(json.dumps({**r, "recipe_def": RECIPES[n], "rescored": rescore}, default=str) + "\n")
    all_rows = [json.loads(l) for l in open(results / "recipes.jsonl")]
    keys = ["recipe", "images_seen", "step", "guidance", "steps", "category", "score", "passed", "n", "ci_lo", "ci_hi",
            "train_images_per_s", "load_avg", "clauses"]
    with open(results / "recipes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore"); w.writeheader(); w.writerows(all_rows)
    print(f"results: {results / 'recipes.jsonl'}, {results / 'recipes.csv'}; runs in {out}")
