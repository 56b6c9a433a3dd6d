"""Peak memory and time of `t2i-sample` for 1,000 and 10,000 prompts: does memory stay flat as the prompt file grows?

Saves a tiny random-weight model (`build_pipeline("tiny", resolution=16)`), writes prompt files of Shapes captions,
and runs `t2i-sample --prompt-file <file> --steps 1` on each in a subprocess, on one thread. Each run's peak RSS
comes from `wait4`. Prints one table and writes JSON.

    python bench/sample_memory.py                         # 1,000 and 10,000 prompts
    python bench/sample_memory.py --sizes 100,1000 --out /tmp/sample-memory
"""
from __future__ import annotations
import json, shutil, sys
from pathlib import Path

from fastcore.script import call_parse

from _common import machine_line, markdown_table, run_measured

SCRIPT = "import torch\ntorch.set_num_threads(1)\nfrom text2imagegen.sample import t2i_sample\nt2i_sample()\n"


def run(script:Path, model:Path, prompts:Path, out:Path) -> dict:
    "Run t2i-sample in a subprocess; its peak RSS (MB) from wait4 and its wall-clock seconds."
    shutil.rmtree(out, ignore_errors=True)
    done = run_measured([sys.executable, script, "--model", model, "--prompt-file", prompts, "--steps", "1", "--out", out],
                        what="t2i-sample", tail=2000)
    return dict(peak_rss_mb=round(done.peak_mb), seconds=round(done.seconds, 1),
                pngs=len(list(out.glob("[0-9]*.png"))), grids=len(list(out.glob("grid_*.png"))))

@call_parse
def main(sizes:str="1000,10000",                   # Numbers of prompts, comma-separated
         out:str="bench/results/sample-memory",   # Folder for the model, prompt files, samples and JSON
):
    "Peak RSS and time of t2i-sample for each number of prompts."
    from text2imagegen.data import ShapesWorld
    from text2imagegen.model import build_pipeline
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    model, script = out / "tiny16", out / "t2i_sample.py"
    if not (model / "model_index.json").is_file(): build_pipeline("tiny", resolution=16).save_pretrained(model)
    script.write_text(SCRIPT)
    rows = []
    for n in map(int, sizes.split(",")):
        prompts = out / f"prompts_{n}.txt"
        world = ShapesWorld(resolution=16, length=max(n, 1))
        prompts.write_text("\n".join(world[k]["caption"] for k in range(n)) + "\n")
        rows.append(dict(prompts=n, **run(script, model, prompts, out / f"samples_{n}")))
    (out / "sample_memory.json").write_text(json.dumps(rows, indent=1))
    print(markdown_table(rows, ["prompts", "peak_rss_mb", "seconds", "pngs", "grids"],
                         {"peak_rss_mb": "peak RSS (MB)", "pngs": "PNGs"}))
    print(f"\n{machine_line()}")
