"""Peak memory and set-up time of `t2i-train` on a corpus the size of Flickr30K, cold and with warm disk caches.

Generates 31,783 JPEGs of 320x240 with 5 distinct captions each in the Flickr30K Kaggle layout (`results.csv` +
`flickr30k_images/`), then runs `t2i-train --data <corpus> --resolution 256 --max-steps 2` in a subprocess:
once with an empty cache folder (cold), then again (warm). Each run's peak RSS comes from `wait4`, its set-up
time from the trainer's own "Data: ... (N s)" line. Also times the cold start with DataLoader workers
decoding images ahead of the encoder. Prints one table and writes JSON.

    python bench/data_memory.py                      # the full corpus (about 20 GB of disk for corpus + caches)
    python bench/data_memory.py --n 2000 --out /tmp  # a quick look
"""
from __future__ import annotations
import json, re, shutil, time
from pathlib import Path

import numpy as np
from fastcore.script import call_parse
from PIL import Image

from _common import machine_info, markdown_table, run_measured

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "grey", "brown"]
THINGS = ["dog", "child", "bicycle", "man", "woman", "car", "ball", "tree", "boat", "house"]
PLACES = ["on the grass", "in the street", "near the water", "in a park", "on a beach", "at night"]


def make_corpus(folder:Path, n:int, seed:int=0):
    "n JPEGs of 320x240 (smooth random colour fields) with 5 distinct captions each, Kaggle layout."
    images = folder / "flickr30k_images"
    if (folder / "results.csv").is_file() and len(list(images.glob("*.jpg"))) == n: return
    images.mkdir(parents=True, exist_ok=True)
    rng, lines = np.random.default_rng(seed), ["image_name| comment_number| comment"]
    for k in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((320, 240), Image.BILINEAR).save(images / f"{k:06d}.jpg", quality=85)
        for j in range(5):
            c, t, p = COLOURS[(k + j) % 8], THINGS[(k * 7 + j) % 10], PLACES[(k + 3 * j) % 6]
            lines.append(f"{k:06d}.jpg| {j}| a {c} {t} {p}, photo {k} caption {j}")
    (folder / "results.csv").write_text("\n".join(lines) + "\n")


def run(corpus:Path, out:Path, cache:Path, *flags) -> dict:
    "One `t2i-train` run: peak RSS (GB), set-up seconds (the trainer's own count), wall seconds."
    cmd = [shutil.which("t2i-train") or "t2i-train", "--data", str(corpus), "--resolution", "256", "--max-steps", "2",
           "--max-minutes", "0", "--batch-size", "4", "--val-size", "32", "--val-every", "2", "--sample-steps", "2",
           "--val-seeds", "0", "--probe-images", "0", "--cache-dir", str(cache), "--output-dir", str(out), *flags]
    done = run_measured(cmd, what=" ".join(cmd))
    text = done.stdout + done.stderr
    out.with_suffix(".log").write_text(text)
    return dict(peak_rss_gb=done.peak_mb / 1024, setup_s=float(re.search(r"Data: .*\((\d+) s\)", text).group(1)),
                wall_s=done.seconds, data_line=re.search(r"Data: .*", text).group(0))


@call_parse
def main(n:int=31_783, # images in the corpus (Flickr30K has 31,783)
         out:str="bench/results/data_memory", # where the corpus, caches, runs and JSON go
         workers:int=2, # DataLoader workers for the extra cold run (0: skip it)
        ):
    "Cold and warm set-up of t2i-train on a Flickr30K-sized corpus at 256 px."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    t0 = time.time(); make_corpus(out / "corpus", n); print(f"corpus of {n} images ready ({time.time() - t0:.0f} s)")
    rows = {}
    for name, flags in [("cold", ()), ("warm", ())] + ([(f"cold, {workers} workers", ("--num-workers", str(workers)))] if workers else []):
        cache = out / ("cache_workers" if "workers" in name else "cache")
        if name.startswith("cold"): shutil.rmtree(cache, ignore_errors=True)
        rows[name] = run(out / "corpus", out / f"run_{name.split(',')[0]}{'_w' if 'workers' in name else ''}", cache, *flags)
        print(name, rows[name])
    cold, warm = rows["cold"], rows["warm"]
    machine = machine_info()
    table = [markdown_table([[k, r["peak_rss_gb"], r["setup_s"], r["wall_s"]] for k, r in rows.items()],
                            ["run", "peak RSS (GB)", "set-up (s)", "wall (s)"])]
    table.append(f"\nwarm start {cold['setup_s'] / max(warm['setup_s'], 1):.1f}x faster than cold (set-up); "
                 f"{n} images, 256 px, tiny preset (MiniLM, pixel space), 2 training steps; {machine['cores']} CPUs")
    print("\n".join(table))
    (out / "data_memory.json").write_text(json.dumps({"n": n, "machine": machine, "runs": rows}, indent=1))
