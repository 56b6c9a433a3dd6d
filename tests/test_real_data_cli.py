"""`t2i-train` on real captioned data, as a user runs it: the console script in a subprocess, on sources of
2,400 images in every layout `load_captioned` reads, generated here."""
import csv, json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# one worker runs this file: its module fixtures are built once (pytest-xdist, `--dist loadgroup`)
pytestmark = pytest.mark.xdist_group("test_real_data_cli")

N = 2400  # images per source: past the sizes where progress bars and checks change behaviour
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
SHAPES = ("square", "bar", "dot")


def _image(k:int) -> tuple:
    "Image k (a coloured shape on white, 24x18) and its captions."
    colour, shape = list(COLOURS)[k % 4], SHAPES[(k // 4) % 3]
    a = np.full((18, 24, 3), 255, np.uint8)
    x, y = 2 + k % 11, 2 + k % 7
    if shape == "square": a[y:y + 8, x:x + 8] = COLOURS[colour]
    elif shape == "bar": a[y:y + 3, x:x + 12] = COLOURS[colour]
    else: a[y:y + 4, x:x + 4] = COLOURS[colour]
    return Image.fromarray(a), [f"a {colour} {shape}", f"one {colour} {shape} on white", f"a {shape} in {colour}"]


def _write_images(folder:Path, fmt:str="PNG") -> list:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(N):
        name = f"{k:05d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        _image(k)[0].save(folder / name, fmt)
        names.append(name)
    return names


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    "One source of N images in each layout."
    root = tmp_path_factory.mktemp("sources")
    out = {}
    jl = root / "jsonl"; names = _write_images(jl)
    (jl / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": _image(k)[1][0]}) + "\n" for k, n in enumerate(names)))
    out["imagefolder-jsonl"] = jl
    cs = root / "csv"; names = _write_images(cs, "JPEG")
    with open(cs / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["file_name", "caption"])
        for k, n in enumerate(names): w.writerow([n, _image(k)[1][1]])
    out["imagefolder-csv"] = cs
    kg = root / "kaggle"; names = _write_images(kg / "flickr30k_images", "JPEG")
    lines = ["image_name| comment_number| comment"] + [f"{n}| {j}| {c}" for k, n in enumerate(names) for j, c in enumerate(_image(k)[1])]
    (kg / "results.csv").write_text("\n".join(lines) + "\n")
    out["kaggle"] = kg
    kp = root / "karpathy"; names = _write_images(kp / "flickr30k-images", "JPEG")
    splits = ["train"] * 8 + ["restval", "val"]
    entries = [{"filename": n, "split": splits[k % 10], "sentences": [{"raw": c} for c in _image(k)[1]]} for k, n in enumerate(names)]
    (kp / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))
    out["karpathy"] = kp
    import datasets
    rows = {"image": [str(jl / n) for n in sorted(os.listdir(jl)) if n.endswith(".png")],
            "caption": [_image(k)[1] for k in range(N)], "filename": [f"{k:05d}.png" for k in range(N)]}
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features(
        {"image": datasets.Image(), "caption": datasets.List(datasets.Value("string")), "filename": datasets.Value("string")}))
    ds.save_to_disk(str(root / "hf"))
    out["hf-save_to_disk"] = root / "hf"
    return out


def t2i_train(data, out:Path, cache:Path, *flags) -> str:
    "Run the `t2i-train` console script in a subprocess (a terminal, not a notebook); its printed output."
    cmd = [shutil.which("t2i-train") or "t2i-train", "--data", str(data), "--resolution", "16", "--max-steps", "2",
           "--max-minutes", "0", "--batch-size", "8", "--val-size", "16", "--val-every", "2", "--sample-steps", "1",
           "--val-seeds", "0", "--num-threads", "1", "--cache-dir", str(cache), "--output-dir", str(out), *flags]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res.stdout


@pytest.mark.parametrize("layout", ["imagefolder-jsonl", "imagefolder-csv", "kaggle", "karpathy", "hf-save_to_disk"])
def test_cli_trains_on_every_layout(sources, tmp_path, layout):
    printed = t2i_train(sources[layout], tmp_path / "run", tmp_path / "cache")
    run = tmp_path / "run"
    assert {"model", "config.json", "log.csv", "heldout.json", "samples", "loss_curve.png"} <= {p.name for p in run.iterdir()}
    held = json.loads((run / "heldout.json").read_text())
    n_train = int(printed.split("Data: ")[1].split(" training")[0])
    if layout == "karpathy":  # its own val split: every tenth image
        assert held["image_ids"] == [f"{k:05d}.jpg" for k in range(N) if k % 10 == 9]
        assert n_train == N - len(held["image_ids"])
    else:  # a seeded 10% split by image
        assert len(held["image_ids"]) == N // 10 and n_train == N - N // 10
    config = json.loads((run / "config.json").read_text())
    prompts = config["val_prompts"]  # captions of held-out images, not Shapes prompts
    captions = {c for k in range(N) for c in _image(k)[1]}
    assert len(prompts) == 8 and set(prompts) <= captions, prompts
    final = json.loads(Image.open(run / "samples" / "final.png").info["params"])
    assert set(final["real_image_ids"]) <= set(held["image_ids"]) and len(final["real_image_ids"]) == 8
    # the probe at the validation step: KID of 64 held-out images, printed, logged and kept
    probe = json.loads((run / "probes.jsonl").read_text())
    assert probe["step"] == 2 and probe["metrics"]["n_real"] == min(64, len(held["image_ids"])), probe["metrics"]
    assert f"step 2: val loss " in printed and f"KID {probe['values']['kid']:.4f}" in printed, printed
    assert float(list(csv.DictReader(open(run / "log.csv")))[-1]["kid"]) == pytest.approx(probe["values"]["kid"], rel=1e-5)
    # the same command again starts warm: nothing is encoded, the same caches are read
    again = t2i_train(sources[layout], tmp_path / "run2", tmp_path / "cache")
    assert "(0 captions, 0 images encoded here" in again, again
    log1, log2 = (list(csv.DictReader(open(r / "log.csv"))) for r in (run, tmp_path / "run2"))
    assert [r["loss"] for r in log1] == [r["loss"] for r in log2]


def test_cli_subset_and_split(sources, tmp_path):
    printed = t2i_train(sources["kaggle"], tmp_path / "sub", tmp_path / "cache", "--subset", "0.25")
    assert f"Data: {N // 4 - N // 40} training and {N // 40} held-out images" in printed, printed
    assert json.loads((tmp_path / "sub" / "config.json").read_text())["subset"] == 0.25
    printed = t2i_train(sources["karpathy"], tmp_path / "count", tmp_path / "cache", "--subset", "500")
    assert "Data: 500 training and 240 held-out images" in printed, printed  # a count of training images; val is the file's
    printed = t2i_train(sources["karpathy"], tmp_path / "test_split", tmp_path / "cache", "--split", "val")
    assert "Data: 216 training and 24 held-out images" in printed, printed  # one split of the file, split by image
    bad = subprocess.run([shutil.which("t2i-train") or "t2i-train", "--data", str(sources["kaggle"]), "--subset", "1.5",
                          "--output-dir", str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "fraction in (0, 1]" in bad.stderr and not (tmp_path / "bad").exists()


def test_cli_evaluates_the_run_on_its_held_out_images(sources, tmp_path):
    "t2i-train then t2i-eval on the run folder alone: the data and held-out ids come from the run."
    t2i_train(sources["imagefolder-jsonl"], tmp_path / "run", tmp_path / "cache")
    cmd = [shutil.which("t2i-eval") or "t2i-eval", str(tmp_path / "run"), "--feature", "pixels", "--n-images", "64",
           "--bootstrap", "10", "--steps", "1", "--clip-model", str(tmp_path / "no_clip_here")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    held = set(json.loads((tmp_path / "run" / "heldout.json").read_text())["image_ids"])
    report = json.loads((tmp_path / "run" / "eval" / "distribution.json").read_text())
    text = json.dumps(report)
    assert "pixels-8x8" in text and "FID" in (tmp_path / "run" / "eval" / "summary.md").read_text()
    ids = report["image_ids"]
    assert len(ids) == 64 and set(ids) <= held
    assert (tmp_path / "run" / "eval" / "real_vs_generated.png").is_file()
