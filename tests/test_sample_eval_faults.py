"""`t2i-sample` and `t2i-eval` as a user runs them, when things go wrong: a mistyped call, a folder they may not write,
a hub id that is not here, a full disk at each write, a stop, and pickled weights that must never be opened.

Each command runs as its console script in a subprocess, on a tiny model saved in a temporary folder. The model folder
holds, beside each component's safetensors, a decoy pickle whose unpickling would create a marker file, as Stable
Diffusion 1.5's own folders hold pickles beside their safetensors: no run may ever create the marker."""
import json, os, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
from PIL import Image

# one worker runs this file: its module fixtures are built once (pytest-xdist, `--dist loadgroup`)
pytestmark = pytest.mark.xdist_group("test_sample_eval_faults")

ROOT = Path(__file__).resolve().parent.parent  # the repository root: this copy of the package, also in a clean clone
COMMANDS = {"t2i-sample": "sample_command", "t2i-eval": "eval_command"}
EVAL_ARGS = ["--per-category", "1", "--n-per-prompt", "1", "--n-images", "8", "--bootstrap", "0", "--steps", "1"]

# Runs before the command in the child: the `nth` file opened for writing whose name holds `T2I_TEST_FULL` takes half
# of what it is given, then reports a full disk (Path.write_bytes, PIL and plain `open` all end in `io.open`).
FULL_DISK = textwrap.dedent("""
    import builtins, errno, io, os
    target, nth, seen, real_open = os.environ["T2I_TEST_FULL"], int(os.environ.get("T2I_TEST_FULL_AT", "1")), [], io.open
    class Full:
        def __init__(self, f): self.f = f
        def write(self, data):
            self.f.write(bytes(data)[:len(data) // 2]); self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        def __enter__(self): return self
        def __exit__(self, *exc): self.f.close()
        def __getattr__(self, name): return getattr(self.f, name)
    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and ("w" in mode or "a" in mode) and target in os.path.basename(os.fspath(file)):
            seen.append(file)
            if len(seen) == nth: return Full(f)
        return f
    io.open = builtins.open = full_open
""")


def console(name:str, *args, env:dict|None=None, before:str="", popen:bool=False, umask:int|None=None):
    "Run console script `name` (`text2imagegen.cli`) with `args` in a subprocess (under `umask`), after the Python code `before`."
    code = f"{before}\nimport sys\nsys.argv[0] = {name!r}\nfrom text2imagegen.cli import {COMMANDS[name]}\n{COMMANDS[name]}()"
    cmd = [sys.executable, "-c", code, *map(str, args)]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    start = (lambda: os.umask(umask)) if umask is not None else None
    if popen: return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, preexec_fn=start)


def last_line(p) -> str:
    "The last line of a command's stderr, after checking that it printed no traceback."
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    return p.stderr.strip().splitlines()[-1]


def snapshot(folder:Path) -> dict:
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    "A tiny model folder (with decoy pickles beside its safetensors), a tiny judge, a decoy pickle, and the marker they would write."
    import torch
    from text2imagegen.judge import ShapesJudge, save_judge
    from text2imagegen.model import build_pipeline
    root = tmp_path_factory.mktemp("faults")
    marker = root / "unpickled"
    class Decoy:
        def __reduce__(self): return (open, (str(marker), "w"))
    def decoy(path):
        path.parent.mkdir(parents=True, exist_ok=True); torch.save({"weight": Decoy()}, path); return path
    torch.manual_seed(0)
    model = root / "model"
    build_pipeline("tiny", resolution=16).save_pretrained(model)
    for name in ("unet/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin", "text_whitening/diffusion_pytorch_model.bin", "model.ckpt"):
        decoy(model / name)
    judge = ShapesJudge(width=8, features=16)
    judge.recipe, judge.ceiling = dict(width=8, features=16, resolution=32), {}
    save_judge(judge, root / "judge.safetensors")
    return dict(root=root, model=model, judge=root / "judge.safetensors", marker=marker, decoy=decoy)


@pytest.fixture(scope="module")
def samples(world):
    "A folder t2i-sample wrote: two images, a grid and params.jsonl."
    out = world["root"] / "samples"
    p = console("t2i-sample", "a red circle", "a blue square", "--model", world["model"], "--steps", "1", "--out", out, umask=0o077)
    assert p.returncode == 0, p.stderr[-3000:]
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o600}  # written with the process's umask
    assert sorted(snapshot(out)) == [".text2imagegen-samples", "0000_a-red-circle.png", "0001_a-blue-square.png", "grid_0001.png", "params.jsonl"]
    return out


@pytest.fixture(scope="module")
def reports(world):
    "A folder t2i-eval wrote: every report and figure of a Shapes evaluation."
    out = world["root"] / "eval"
    p = console("t2i-eval", world["model"], *EVAL_ARGS, "--judge", world["judge"], "--out", out, umask=0o077)
    assert p.returncode == 0, p.stderr[-3000:]
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o600}  # written with the process's umask
    assert sorted(snapshot(out)) == ["adherence.json", "adherence.md", "adherence_failures.png", "distribution.json", "per_prompt.png",
                                     "real_vs_generated.png", "summary.md"]
    return out


def test_a_call_into_its_own_folder_adds_and_a_bad_call_changes_nothing(world, samples, tmp_path):
    out = tmp_path / "out"; shutil.copytree(samples, out)
    before = snapshot(out)
    bad = console("t2i-sample", "a green triangle", "--model", world["model"], "--steps", "0", "--out", out)
    assert bad.returncode == 2 and last_line(bad).startswith("t2i-sample: error: steps must be an int ≥ 1; got 0"), bad.stderr[-2000:]
    assert snapshot(out) == before  # params.jsonl keeps its rows: nothing in the folder was touched
    again = console("t2i-sample", "a green triangle", "--model", world["model"], "--steps", "1", "--out", out, umask=0o027)
    assert again.returncode == 0, again.stderr[-3000:]
    after = snapshot(out)
    assert sorted(set(after) - set(before)) == ["0002_a-green-triangle.png", "grid_0002.png"]
    assert all(after[k] == v for k, v in before.items() if k != "params.jsonl")  # no PNG overwritten
    rows = after["params.jsonl"].decode().splitlines()
    assert after["params.jsonl"].startswith(before["params.jsonl"]) and [json.loads(r)["file"] for r in rows][-1] == "0002_a-green-triangle.png"
    assert len(rows) == 3 and not world["marker"].exists()
    assert {(out / n).stat().st_mode & 0o777 for n in ("0002_a-green-triangle.png", "grid_0002.png")} == {0o640}  # the process's umask


def test_a_folder_it_did_not_write_is_refused(world, tmp_path):
    mine = tmp_path / "mine"; mine.mkdir(); (mine / "notes.txt").write_text("my notes")
    p = console("t2i-sample", "a red circle", "--model", world["model"], "--steps", "1", "--out", mine)
    assert p.returncode == 2 and "holds files t2i-sample did not write (notes.txt)" in last_line(p), p.stderr[-2000:]
    assert snapshot(mine) == {"notes.txt": b"my notes"}


@pytest.mark.parametrize("offline", ["1", ""])
def test_a_hub_id_that_is_not_here(world, tmp_path, offline):
    env = {"HF_HUB_OFFLINE": offline, "HF_HOME": str(tmp_path / "hf")}  # an empty cache; no network here either way
    p = console("t2i-sample", "a cat", "--model", "runwayml/stable-diffusion-v1-5", "--out", tmp_path / "out", env=env)
    line = last_line(p)
    assert p.returncode == 2 and line.startswith("t2i-sample: error: 'runwayml/stable-diffusion-v1-5' is neither a local folder "
                                                 "nor in the local Hugging Face cache"), p.stderr[-2000:]
    assert "give a run folder or a pipeline folder" in line and not (tmp_path / "out").exists()
    if offline:
        p = console("t2i-eval", "runwayml/stable-diffusion-v1-5", "--out", tmp_path / "eval", env=env)
        assert p.returncode == 2 and "is neither a local folder nor in the local Hugging Face cache" in last_line(p)
        assert not (tmp_path / "eval").exists()


def test_pickled_weights_are_refused_unopened(world, tmp_path):
    model = tmp_path / "model"; shutil.copytree(world["model"], model)
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # the UNet's weights: a pickle only
    p = console("t2i-sample", "a red circle", "--model", model, "--out", tmp_path / "out")
    line = last_line(p)
    assert p.returncode == 2 and f"{model / 'unet' / 'diffusion_pytorch_model.bin'} holds pickled weights" in line, p.stderr[-2000:]
    assert "a .safetensors file is needed" in line and "save_file(torch.load(" in line and not (tmp_path / "out").exists()
    judge = world["decoy"](tmp_path / "judge.pt")
    p = console("t2i-eval", world["model"], "--judge", judge, "--out", tmp_path / "eval")
    assert p.returncode == 2 and f"{judge} holds pickled weights" in last_line(p), p.stderr[-2000:]
    assert not world["marker"].exists() and not (tmp_path / "eval").exists()


@pytest.mark.parametrize("name, nth", [("0003_", 1), ("grid_0002", 1), ("params.jsonl", 2)])
def test_a_full_disk_while_sampling(world, samples, tmp_path, name, nth):
    out = tmp_path / "out"; shutil.copytree(samples, out)
    before = snapshot(out)
    p = console("t2i-sample", "a green triangle", "a small red circle", "--model", world["model"], "--steps", "1", "--out", out,
                before=FULL_DISK, env={"T2I_TEST_FULL": name, "T2I_TEST_FULL_AT": str(nth)})
    line = last_line(p)
    assert p.returncode == 1 and line.startswith(f"t2i-sample: error: No space left on the device for {out}/{name}"), p.stderr[-2000:]
    assert "it needs at least" in line and "are free there" in line
    after = snapshot(out)
    assert all(after[k] == v for k, v in before.items() if k != "params.jsonl")  # every earlier file byte for byte
    assert after["params.jsonl"].startswith(before["params.jsonl"]) and [k for k in after if k.startswith(".tmp-")] == []
    for row in after["params.jsonl"].decode().splitlines():  # whole rows only, each naming a complete image
        with Image.open(out / json.loads(row)["file"]) as image: image.verify()


@pytest.mark.parametrize("name", ["adherence.md", "real_vs_generated.png", "summary.md"])
def test_a_full_disk_while_evaluating(world, reports, tmp_path, name):
    out = tmp_path / "eval"; shutil.copytree(reports, out)
    before = snapshot(out)
    p = console("t2i-eval", world["model"], *EVAL_ARGS, "--judge", world["judge"], "--out", out, before=FULL_DISK, env={"T2I_TEST_FULL": name})
    line = last_line(p)
    assert p.returncode == 1 and line.startswith(f"t2i-eval: error: No space left on the device for {out / name}"), p.stderr[-2000:]
    assert snapshot(out) == before  # the reports before it were rewritten the same (same seeds), it and those after it untouched


def wait_for(proc, check, limit=240):
    "Wait until `check()` holds while `proc` runs."
    started = time.time()
    while not check() and proc.poll() is None and time.time() - started < limit: time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]


def test_a_stopped_sample_run_says_what_it_kept(world, tmp_path):
    out = tmp_path / "stopped"
    (tmp_path / "prompts.txt").write_text("\n".join(f"a small red circle number {k}" for k in range(60)))
    proc = console("t2i-sample", "--prompt-file", tmp_path / "prompts.txt", "--model", world["model"], "--steps", "20",
                   "--batch-size", "2", "--out", out, popen=True)
    wait_for(proc, lambda: len(list(out.glob("0*.png"))) >= 2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    line = stderr.strip().splitlines()[-1]
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    written = sorted(out.glob("0*.png"))
    assert line.startswith(f"t2i-sample: stopped by SIGINT after {len(written)} of 60 images: {len(written)} image(s)"), line
    assert f"draw them again with: t2i-sample --model {world['model']} --prompt-file {tmp_path / 'prompts.txt'}" in line, line
    rows = (out / "params.jsonl").read_text().splitlines()
    assert [json.loads(r)["file"] for r in rows] == [p.name for p in written][:len(rows)] and len(rows) >= len(written) - 1
    for png in written:
        with Image.open(png) as image: image.verify()


def test_a_stopped_evaluation_says_what_it_kept(world, tmp_path):
    out = tmp_path / "eval"
    proc = console("t2i-eval", world["model"], "--per-category", "1", "--n-per-prompt", "1", "--n-images", "4000", "--bootstrap", "0",
                   "--steps", "1", "--judge", world["judge"], "--out", out, popen=True)
    wait_for(proc, lambda: (out / "adherence_failures.png").exists())
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"t2i-eval: stopped by SIGINT: adherence.json, adherence.md, adherence_failures.png in {out} are complete"), line
    assert f"run it again with: t2i-eval --out {out}" in line and "summary.md" not in line, line
    assert sorted(p.name for p in out.iterdir()) == ["adherence.json", "adherence.md", "adherence_failures.png"]
