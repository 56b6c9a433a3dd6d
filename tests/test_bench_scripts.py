"""The benchmark scripts run as documented in bench/README.md; here in their CPU smoke modes."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_sd15_smoke(tmp_path):
    "`bench/gpu_sd15.py --smoke` runs every row of the GPU benchmark on a tiny SD-architecture model on the CPU."
    out = tmp_path / "gpu_sd15.json"
    proc = subprocess.run([sys.executable, "bench/gpu_sd15.py", "--smoke", "--full", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert not [r for r in rows if "error" in r], [r["error"] for r in rows if "error" in r]
    train = {(r["how"], r["px"]): r for r in rows if r["task"] == "train" and r["batch"] == 2 and "skipped" not in r}
    assert {px for _, px in train} == {32, 64}
    flops, peak = {int(k): v for k, v in result["train_flops_per_image"].items()}, result["peak"]
    assert flops[64] > 3 * flops[32] > 0 and peak["measured_tflops"] > 0 and peak["datasheet_tflops"] is None  # 4x the pixels
    for r in (r for r in rows if r["task"] == "train" and "skipped" not in r):  # utilisation: FLOPs per image x images/s over the measured peak
        assert r["tflops"] == r["images_per_s"] * flops[r["px"]] / 1e12 and r["util_measured"] == r["tflops"] / peak["measured_tflops"]
    assert [r["batch"] for r in rows if r["task"] == "train" and r["how"].startswith("trainer (cached") and r["px"] == 64] == [2, 4]
    options = {r["how"]: r for r in rows if r["how"] in ("trainer + fused AdamW", "trainer + channels-last", "trainer + compiled UNet", "trainer + all three")}
    assert all(r["images_per_s"] > 0 for h, r in options.items() if "skipped" not in r) and len(options) == 4
    assert {h for h, r in options.items() if "skipped" in r} == {"trainer + compiled UNet", "trainer + all three"}  # inductor: GPU only
    memory = {r["how"]: r for r in rows if r["task"].startswith("memory")}
    assert {h for h, r in memory.items() if "skipped" in r} == {"+ 8-bit AdamW", "+ all three"}  # bitsandbytes needs CUDA
    assert all(r["batch"] == 2 and r["images_per_s"] > 0 for r in memory.values() if "skipped" not in r)  # the search's cap on the CPU
    for (how, px), r in train.items():
        assert r["images_per_s"] > 0 and r["trainable"] > 0
        assert r["vs_reference"] == r["images_per_s"] / train[("reference (encode VAE + CLIP every step)", px)]["images_per_s"]
    full, lora = train[("trainer (cached latents + captions)", 64)], train[("trainer + LoRA r4", 64)]
    assert lora["trainable"] < full["trainable"] / 10  # only the adapters train
    sample = {(r["how"], r["batch"]): r for r in rows if r["task"] == "sample"}
    assert set(sample) == {(how, b) for how in ("generate (project)", "StableDiffusionPipeline", "UNet alone") for b in (1, 2)}
    assert all(r["it_per_s"] > 0 for r in sample.values())
    assert all(sample[("UNet alone", b)]["over_unet"] == 1 for b in (1, 2))
    assert "| task | how | px | batch | speed | ratio | TFLOP/s (utilisation) |" in proc.stdout and f"JSON: {out}" in proc.stdout


def test_lora_vs_full_smoke(tmp_path):
    "`bench/lora_vs_full.py` at toy size: one JSON row per configuration, LoRA trains fewer parameters, every time and peak is measured."
    out = tmp_path / "lora_vs_full.json"
    proc = subprocess.run([sys.executable, "bench/lora_vs_full.py", "--channels", "32", "--resolution", "32", "--batch", "2",
                           "--warmup", "1", "--steps", "1", "--rounds", "1", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["how"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["full fine-tuning", "LoRA r4", "LoRA r16"]
    full = rows["full fine-tuning"]
    assert rows["LoRA r4"]["trainable"] < rows["LoRA r16"]["trainable"] < full["trainable"]
    assert all(r["seconds_per_step"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
    assert rows["LoRA r4"]["trainable_vs_full"] == rows["LoRA r4"]["trainable"] / full["trainable"]
    assert "| training | trainable params |" in proc.stdout and f"JSON: {out}" in proc.stdout


def test_time_to_quality_snapshots(tmp_path, monkeypatch):
    "`train_with_snapshots` (bench/_common.py, a `Trainer` callback) saves the EMA pipeline at each mark but the last, which the final model covers."
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from _common import train_with_snapshots
    from text2imagegen.train import TrainConfig, read_log
    cfg = TrainConfig(resolution=32, shapes_pool=32, val_size=4, batch_size=4, max_steps=3, max_minutes=0, warmup_steps=1,
                      val_every=3, checkpoint_every=3, val_seeds=[0], sample_steps=2, num_threads=1,
                      cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "run"))
    out = train_with_snapshots(cfg, images=[4, 12])  # after step 1, and at the last step
    first, final = out["points"]
    assert (first["step"], first["images_seen"], final["label"], final["step"], final["images_seen"]) == (1, 4, "final", 3, 12)
    assert (Path(first["path"]) / "model_index.json").is_file() and first["save_s"] > 0 and first["images_per_s"] > 0
    assert out["timing"]["snapshot_overhead_s"] == first["save_s"]
    assert [r["step"] for r in read_log(tmp_path / "run" / "log.csv")] == [1, 2, 3]


def test_train_speedups_smoke(tmp_path):
    "`bench/train_speedups.py --smoke`: a profile of the step, interleaved rows, and the extras of a default run counted from its config."
    proc = subprocess.run([sys.executable, "bench/train_speedups.py", "--smoke", "--attempts", "ema_every4", "--shapes-pool", "64",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "train_speedups.json").read_text())
    rows = {r["attempt"]: r for r in result["rows"]}
    assert list(rows) == ["default", "ema_every4"]
    assert all(r["images_per_s"] > 0 and len(r["per_round"]) == 1 for r in rows.values())
    assert rows["default"]["ratio"] == 1 and rows["ema_every4"]["ratio"] == rows["ema_every4"]["per_round"][0] / rows["default"]["per_round"][0]
    assert rows["ema_every4"]["losses_identical"]  # the EMA never touches the trained weights: same batches, same losses
    run = result["run"]
    assert (run["max_steps"], run["val_every"], run["checkpoint_every"]) == (1600, 250, 500)  # the tiny preset's default run
    assert {e["what"]: e["per_run"] for e in run["extras"]} == dict(val_loss=7, sample_grid=7, loss_curve_plot=7, checkpoint=4)
    assert all(e["seconds"] > 0 for e in run["extras"]) and 0 < run["extras_share"] < 1
    profile = (tmp_path / "profile.txt").read_text()
    assert "aten::" in profile and "| backward |" in profile and "| optimizer step |" in profile
    assert "| attempt | what it changes | images/s |" in proc.stdout and (tmp_path / "train_speedups.md").exists()


def test_cost_curves_smoke(tmp_path):
    "`bench/cost_curves.py --smoke`: every point of the four curves timed in its own subprocess with its own peak RSS; a figure."
    proc = subprocess.run([sys.executable, "bench/cost_curves.py", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    curves = json.loads((tmp_path / "cost_curves.json").read_text())["curves"]
    assert list(curves) == ["train vs resolution", "train vs batch", "sample vs steps", "sample vs batch"]
    for c in curves.values():
        xs = [p[c["varies"]] for p in c["points"]]
        assert xs == sorted(xs) and len(set(xs)) == len(xs) > 1
        assert all(p["seconds"] > 0 and p["peak_rss_mb"] > 100 for p in c["points"])  # a process with torch loaded
    assert (tmp_path / "cost_curves.png").stat().st_size > 10_000
    assert "| curve | point | seconds |" in proc.stdout


def test_speckle_smoke(tmp_path):
    "`bench/speckle.py` on a saved random-weight tiny model: a row per setting, same images count, a clear error for a bad setting."
    from text2imagegen.model import build_pipeline
    build_pipeline("tiny").save_pretrained(tmp_path / "model")
    out = tmp_path / "speckle.json"
    cmd = [sys.executable, "bench/speckle.py", "--models", str(tmp_path / "model"), "--per-category", "2",
           "--categories", "single,counting", "--out", str(out)]
    proc = subprocess.run(cmd + ["--settings", "dpm++2m:2:3,dpm++2m_thresholding:2:3"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["sampler"], r["steps"], r["guidance"]) for r in rows] == [("dpm++2m", 2, 3.0), ("dpm++2m_thresholding", 2, 3.0)]
    assert all(r["n"] == 4 and 0 <= r["speckle"] <= 1 and 0 <= r["images_with_speckle"] <= 4 for r in rows)
    assert "| model | sampler | steps | guidance | speckle |" in proc.stdout and f"JSON: {out}" in proc.stdout
    bad = subprocess.run(cmd + ["--settings", "dpm3:20:3"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "sampler:steps:guidance" in bad.stderr and "dpm++2m" in bad.stderr


def test_train_speed_vs_smoke(tmp_path):
    "`bench/train_speed_vs.py --smoke` against HEAD: each run imports its own tree's code, the table has a row per round and the mean, the worktree goes."
    out = tmp_path / "train_speed_vs.json"
    proc = subprocess.run([sys.executable, "bench/train_speed_vs.py", "--smoke", "--ref", "HEAD", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    runs = {r["code"]: r for r in result["runs"]}
    assert set(runs) == {"reference", "current"} and all(r["images_per_s"] > 0 and r["steady_steps"] == 3 for r in runs.values())
    assert runs["current"]["module"] == str(ROOT / "text2imagegen" / "__init__.py")
    assert "train_speed_vs-" in runs["reference"]["module"] and not Path(runs["reference"]["module"]).exists()  # its worktree is removed
    assert result["rows"][0]["ips_ratio"] == runs["current"]["images_per_s"] / runs["reference"]["images_per_s"]
    assert "| round | reference images/s | current images/s | images/s current / reference |" in proc.stdout and "| mean |" in proc.stdout
    ref_tree = str(Path(runs["reference"]["module"]).parents[1])
    assert ref_tree not in subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout



def test_probe_cost_smoke(tmp_path):
    "`bench/probe_cost.py --smoke`: a run with the probe and one without, the probe's share from their wall times."
    out = tmp_path / "probe_cost.json"
    proc = subprocess.run([sys.executable, "bench/probe_cost.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    runs = {r["probe"]: r for r in result["runs"]}
    assert set(runs) == {"with probe", "without"} and all(r["validations"] == 2 for r in runs.values())
    row = result["rows"][0]
    assert row["share"] == (runs["with probe"]["wall_s"] - runs["without"]["wall_s"]) / runs["with probe"]["wall_s"]
    assert "| round | wall with probe (s) | wall without (s) |" in proc.stdout and "| mean |" in proc.stdout
