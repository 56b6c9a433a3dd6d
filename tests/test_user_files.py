"""`t2i-train` never loses the user's files: the console script in subprocesses, run the way a careless or hostile
user runs it (wrong folders, typos, signals, SIGKILL, full disks, damaged checkpoints), checked from the outside.

Runs are tiny (4 steps of the offline default, 32 px). One finished run is trained once and copied where a test
needs one; the independent runs of the file go through a pool of two workers (`T2I_TEST_WORKERS`). Full disks and
well-timed signals come from `faults.py`, which patches the child's own write calls (no mounts, no timing guesses:
a paused write tells the test when to send the signal)."""
import csv, hashlib, itertools, json, os, re, shlex, shutil, signal, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from PIL import Image

if str(Path(__file__).resolve().parent) not in sys.path: sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults import FAULTS_ENV, fault  # noqa: E402  (tests/faults.py, also run as the child's harness)

# one worker runs this file: its module fixtures are built once (pytest-xdist, `--dist loadgroup`)
pytestmark = pytest.mark.xdist_group("test_user_files")

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).resolve().parent / "faults.py"
MARKER = ".text2imagegen-run"
HINT = " (run with --debug or T2I_DEBUG=1 for the traceback)"
WORKERS = int(os.environ.get("T2I_TEST_WORKERS", "2"))
TIMEOUT = 600  # seconds a run may take before the test gives up on it

ENV = {k: v for k, v in os.environ.items() if k not in ("T2I_DEBUG", "T2I_TEST_SLOW_SAVE", FAULTS_ENV)}
ENV.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")

_script = Path(sys.executable).parent / "t2i-train"  # the console script of this environment
CLI = [str(_script)] if _script.is_file() else [sys.executable, "-c", "import sys; sys.argv[0] = 't2i-train'; "
                                                "from text2imagegen.cli import train_command; train_command()"]

# the offline default (Shapes world, MiniLM), 4 steps: checkpoints and grids at steps 2 and 4
TINY = ["--shapes-pool", "16", "--val-size", "4", "--batch-size", "4", "--max-steps", "4", "--val-every", "2",
        "--checkpoint-every", "2", "--sample-steps", "2", "--val-seeds", "0", "--num-threads", "1", "--warmup-steps", "1",
        "--max-minutes", "0", "--probe-per-category", "0", "--probe-images", "0"]


# ---------------------------------------------------------------------------------------------------------- runs
@dataclass
class Result:
    argv: list
    rc: int
    stdout: str
    stderr: str
    def __str__(self):
        return f"$ {shlex.join(map(str, self.argv))}\nexit code {self.rc}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-5000:]}"


_count = itertools.count()


class Proc:
    "A running `t2i-train` (the console script, or the fault harness when given faults), its output in files."
    def __init__(self, argv:list, faults:list|None=None, cwd=None, umask:int|None=None, logs:Path|None=None):
        cmd = [sys.executable, str(HARNESS), *argv] if faults else [*CLI, *argv]
        if umask is not None: cmd = ["sh", "-c", f"umask {umask:03o} && exec \"$@\"", "sh", *cmd]
        logs = Path(logs or tempfile.mkdtemp(prefix="t2i-logs-"))
        logs.mkdir(parents=True, exist_ok=True)
        n = next(_count)
        self.argv, self.out, self.err = ["t2i-train", *map(str, argv)], logs / f"{n:03d}.out", logs / f"{n:03d}.err"
        env = {**ENV, **({FAULTS_ENV: json.dumps(faults)} if faults else {})}
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.p = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                      start_new_session=True)

    @property
    def pid(self): return self.p.pid

    def wait_for(self, cond, timeout:float=TIMEOUT) -> bool:
        "Poll until `cond()` holds (True) or the process ends first (False)."
        t0 = time.time()
        while time.time() - t0 < timeout:
            if cond(): return True
            if self.p.poll() is not None: return cond()
            time.sleep(0.02)
        return False

    def signal_when(self, cond, sig) -> bool:
        "Send `sig` the moment `cond()` holds; False if the process ended first."
        hit = self.wait_for(cond)
        if hit and self.p.poll() is None: self.p.send_signal(sig)
        return hit

    def result(self, timeout:float=TIMEOUT) -> Result:
        try: rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill(); rc = self.p.wait()
        return Result(self.argv, rc, self.out.read_text(errors="replace"), self.err.read_text(errors="replace"))


def run(argv, **kw) -> Result:
    "Run `t2i-train argv` to its end."
    return Proc(argv, **kw).result()


def tiny(out, cache, *extra, prompts=None) -> list:
    "The flags of a tiny run into `out` with caches in `cache`, then `extra` (later flags win)."
    return [*TINY, *(["--val-prompts", str(prompts)] if prompts else []), "--cache-dir", str(cache), "--output-dir", str(out), *map(str, extra)]


def flagged(path:Path):
    "A condition: the fault harness wrote its flag file."
    return lambda: Path(path).exists() and Path(path).read_text().endswith("\n")


# ------------------------------------------------------------------------------------------------------- checks
def sha(path:Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""): h.update(chunk)
    return h.hexdigest()


def snapshot(*roots) -> dict:
    "Every folder and file under `roots` (hidden ones too): the SHA-256 of each file, 'dir' for a folder, None for a missing root."
    out = {}
    for root in map(Path, roots):
        if not root.exists() and not root.is_symlink(): out[str(root)] = None; continue
        for p in [root, *sorted(root.rglob("*"))]:
            out[str(p)] = "link" if p.is_symlink() else "dir" if p.is_dir() else sha(p)
    return out


def changes(before:dict, after:dict) -> list:
    "What differs between two snapshots, as lines."
    keys = sorted(set(before) | set(after))
    return [f"{k}: {'missing' if before.get(k, 0) is None else before.get(k, 'absent')[:8]} -> "
            f"{'missing' if after.get(k, 0) is None else after.get(k, 'absent')[:8]}" for k in keys if before.get(k, 0) != after.get(k, 0)]


def absent_or_empty(folder:Path) -> bool: return not folder.exists() or not any(folder.iterdir())


def leftovers(run:Path) -> list:
    "Hidden entries a finished or failed process leaves in a run folder: temporary copies, a lock (the run marker aside)."
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*") if p.name != MARKER) if run.exists() else []


def command_lines(text:str) -> list:
    "The messages of the command itself (`t2i-train: ...`): from where each starts to the end of its line (a progress bar may precede it)."
    lines = [seg[seg.index("t2i-train: "):] for seg in re.split(r"[\r\n]", text) if "t2i-train: " in seg]
    return [l for l in lines if not l.startswith("t2i-train: warning:")]  # warnings may come before


def error_line(res:Result, code:int) -> str:
    "The one-line error of an expected failure: exit `code`, no traceback, one `t2i-train: error: ...` line with the hint."
    assert res.rc == code, f"expected exit code {code}\n{res}"
    assert "Traceback" not in res.stderr, f"a traceback on stderr\n{res}"
    lines = command_lines(res.stderr)
    assert len(lines) == 1, f"expected one 't2i-train:' line on stderr, got {len(lines)}\n{res}"
    assert lines[0].startswith("t2i-train: error: ") and lines[0].endswith(HINT), f"not the one-line error format\n{res}"
    return lines[0]


def summary_line(res:Result, sig:str) -> str:
    "The one-line summary of a stop outside the training loop: exit 130, no traceback, one `t2i-train: ` line naming the signal."
    assert res.rc == 130, f"expected exit code 130 after {sig}\n{res}"
    assert "Traceback" not in res.stderr + res.stdout, f"a traceback after {sig}\n{res}"
    lines = command_lines(res.stderr + "\n" + res.stdout)
    assert len(lines) == 1 and sig in lines[0] and not lines[0].startswith("t2i-train: error"), f"expected one summary naming {sig}\n{res}"
    return lines[0]


def continue_command(text:str) -> list:
    "The `t2i-train ...` command a summary names (its arguments), or None."
    m = re.search(r"(?:^|[\s`'\"])(t2i-train\s+-.*)$", text.split("t2i-train: ", 1)[-1])
    return shlex.split(m.group(1).rstrip(".`'\" "))[1:] if m else None


def disk_full_path(res:Result) -> Path:
    "The path named by the full-disk error (exit 1, one line)."
    line = error_line(res, 1)
    m = re.search(r"No space left on the device for (.+?): it needs at least .+ and .+ are free there", line)
    assert m, f"not the full-disk message\n{res}"
    return Path(m.group(1))


def inside(path, folder) -> bool:
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def log_rows(run:Path) -> list:
    "The complete rows of a run's log.csv as lists of strings (a torn last line is left out)."
    text = (run / "log.csv").read_text()
    lines = text.split("\n")[:-1]  # the part after the last newline is a torn row, if any
    return [row for row in csv.reader(lines[1:])]


def log_steps(run:Path) -> list: return [int(float(r[0])) for r in log_rows(run)]


def unet_sha(run:Path) -> str: return sha(run / "model" / "unet" / "diffusion_pytorch_model.safetensors")


def png_ok(path:Path) -> bool:
    try:
        with Image.open(path) as im: im.load()
        return True
    except Exception: return False


def checkpoint_ok(folder:Path) -> list:
    "What is wrong with a checkpoint folder, read from its checksums.json ([] when intact)."
    try: record = json.loads((folder / "checksums.json").read_text())
    except (OSError, ValueError) as e: return [f"{folder.name}/checksums.json: {e}"]
    bad = [f"{folder.name}/{n}" for n, want in record.items()
           if not (folder / n).is_file() or (folder / n).stat().st_size != want["bytes"] or sha(folder / n) != want["sha256"]]
    return bad + [f"{folder.name}/{n}: missing" for n in ("unet.safetensors", "state.safetensors", "state.json") if n not in record]


def _json_without(path:Path, *keys):
    d = json.loads(path.read_text())
    return {k: v for k, v in d.items() if k not in keys} if isinstance(d, dict) else d


RUN_MODE = ("output_dir", "cache_dir", "overwrite", "resume")  # config values that name the folders or how a run started


def damaged(run:Path, ref:Path) -> list:
    """Files of `run` (same flags as the uninterrupted run `ref`, another folder) that are not what `ref` holds:
    byte for byte, or for files naming the folder or timings, the same values; checkpoints match their checksums."""
    problems = []
    if not run.exists(): return problems
    for p in sorted(run.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(run).parts): continue
        rel, r = p.relative_to(run).as_posix(), ref / p.relative_to(run)
        try:
            if rel in ("config.json", "config_sources.json"):
                if _json_without(p, *RUN_MODE) != _json_without(r, *RUN_MODE): problems.append(f"{rel}: other values")
            elif rel == "log.csv":
                rows, want = log_rows(run), log_rows(ref)
                if [x[:5] for x in rows] != [x[:5] for x in want[:len(rows)]] or len(rows) > len(want): problems.append(f"{rel}: other rows")
            elif re.fullmatch(r"checkpoints/checkpoint-\d+/state\.(json|safetensors)", rel): pass  # hold the RNG state and paths: checksums.json checks them
            elif re.fullmatch(r"checkpoints/checkpoint-\d+/checksums\.json", rel): problems += checkpoint_ok(p.parent)
            elif rel == "loss_curve.png":
                if not png_ok(p): problems.append(f"{rel}: not a readable PNG")
            elif rel == "resumes.jsonl": [json.loads(l) for l in p.read_text().splitlines()]
            elif not r.is_file(): problems.append(f"{rel}: an uninterrupted run writes no such file")
            elif sha(p) != sha(r): problems.append(f"{rel}: not the file an uninterrupted run writes")
        except (OSError, ValueError) as e: problems.append(f"{rel}: {e}")
    return problems


# ------------------------------------------------------------------------------------------------------- data
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}


def imagefolder(folder:Path, n:int) -> Path:
    "An imagefolder of `n` 32x32 PNGs (a coloured square on white) with `metadata.jsonl` captions."
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n):
        colour = list(COLOURS)[k % 4]
        a = np.full((32, 32, 3), 255, np.uint8)
        x, y = 2 + (k * 5) % 18, 2 + (k * 3) % 18
        a[y:y + 10, x:x + 10] = COLOURS[colour]
        Image.fromarray(a).save(folder / f"{k:03d}.png")
        rows.append({"file_name": f"{k:03d}.png", "text": f"a {colour} square, {'left' if x < 11 else 'right'}"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@dataclass
class Base:
    root: Path
    prompts: Path  # two grid prompts (short grids)
    cache: Path  # warm caches of the reference run
    ref: Path  # a finished run of TINY (umask 022)
    imgs: Path  # a user's imagefolder of 12 images
    folder_cache: Path
    folder_run: Path  # a finished run on `imgs`, given as the relative path `imgs` from `root`

    def copy(self, dest:Path, which:str="ref") -> Path:
        shutil.copytree(getattr(self, which), dest, symlinks=True)
        return dest

    def argv(self, out, *extra, cache=None) -> list:
        return tiny(out, cache or self.cache, *extra, prompts=self.prompts)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    root = tmp_path_factory.mktemp("base")
    prompts = root / "prompts.txt"
    prompts.write_text("a red circle on the left\na blue square above a yellow triangle\n")
    b = Base(root, prompts, root / "cache", root / "reference", imagefolder(root / "imgs", 12), root / "folder_cache", root / "folder_run")
    procs = [Proc(b.argv(b.ref), umask=0o022, logs=root / "logs"),
             Proc(tiny("folder_run", "folder_cache", "--data", "imgs", prompts="prompts.txt"), cwd=root, logs=root / "logs")]
    for p, out in zip(procs, (b.ref, b.folder_run)):
        res = p.result()
        assert res.rc == 0 and (out / "model" / "model_index.json").is_file(), f"the tiny run itself fails\n{res}"
    return b


# --------------------------------------------------------------------------------------------- the run pool
JOBS = {}  # name -> (function(tmp, base) -> dict, the test names that read its result)


def job(*tests):
    "Register a function as a job whose result the named tests (pytest item names) read."
    def register(fn):
        JOBS[fn.__name__] = (fn, set(tests) or {f"test_{fn.__name__}"})
        return fn
    return register


@pytest.fixture(scope="module")
def results(base, request, tmp_path_factory) -> dict:
    "Run the jobs the selected tests need, two at a time; {job name: future}."
    selected = {item.name for item in request.node.listchain()[0].items}
    todo = {name: fn for name, (fn, tests) in JOBS.items() if tests & selected}
    dirs = {name: tmp_path_factory.mktemp(re.sub(r"\W+", "_", name)[:40]) for name in todo}
    ex = ThreadPoolExecutor(max(1, WORKERS))
    futures = {name: ex.submit(fn, dirs[name], base) for name, fn in todo.items()}
    ex.shutdown(wait=True)
    return futures


def result_of(results, name):
    return results[name].result()


# ------------------------------------------------------------------------------------ refused before any work
@dataclass
class Case:
    argv: list
    code: int = 2
    words: tuple = ()  # in the error line
    watch: tuple = ()  # paths left exactly as they were found (missing ones stay missing)
    fresh: tuple = ()  # cache folders given fresh: still absent or empty
    cwd: Path | None = None
    debug: bool = False  # --debug: the traceback is shown


def _thesis(folder:Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.txt").write_text("Chapter 1. Nothing here may be lost.\n")
    return folder


def _truncate(path:Path):
    with open(path, "r+b") as f: f.truncate(path.stat().st_size // 2)


def _samples_as_data(run:Path) -> Path:
    "Make a run's samples/ an imagefolder (a user training on a run's own grids)."
    s = run / "samples"
    (s / "metadata.jsonl").write_text("".join(json.dumps({"file_name": p.name, "text": "a grid"}) + "\n" for p in sorted(s.glob("*.png"))))
    return s


REFUSALS = {
    "bad-batch-size": lambda t, b: Case(b.argv(_mk(t / "out"), "--batch-size", "0", cache=t / "cache"), words=("batch",),
                                        watch=(t / "out",), fresh=(t / "cache",)),
    "bad-batch-size-debug": lambda t, b: Case(b.argv(_mk(t / "out"), "--batch-size", "0", "--debug", cache=t / "cache"),
                                              watch=(t / "out",), fresh=(t / "cache",), debug=True),
    "missing-data-folder": lambda t, b: Case(b.argv(t / "out", "--data", t / "no-such-photos", cache=t / "cache"),
                                             words=("no-such-photos",), watch=(t / "out",), fresh=(t / "cache",)),
    "overwrite-the-data-folder": lambda t, b: Case(b.argv(t / "photos", "--data", b.copy(t / "photos", "imgs"), "--overwrite"),
                                                   watch=(t / "photos",)),
    "overwrite-the-parent-of-the-data": lambda t, b: Case(
        b.argv(t / "project", "--data", b.copy(t / "project" / "photos", "imgs"), "--overwrite"), watch=(_notes(t / "project"),)),
    "overwrite-a-run-folder-whose-samples-are-the-data": lambda t, b: Case(
        b.argv(t / "run", "--data", _samples_as_data(b.copy(t / "run")), "--overwrite"), watch=(t / "run",)),
    "overwrite-into-the-data-folder": lambda t, b: Case(b.argv(t / "photos" / "run", "--data", b.copy(t / "photos", "imgs"), "--overwrite"),
                                                        watch=(t / "photos",)),
    "overwrite-a-folder-with-a-thesis": lambda t, b: Case(b.argv(_thesis(t / "mine"), "--overwrite"), watch=(t / "mine",)),
    "overwrite-a-run-folder-with-a-thesis": lambda t, b: Case(b.argv(_thesis(b.copy(t / "run")), "--overwrite"), words=("thesis.txt",),
                                                             watch=(t / "run",)),
    "reuse-a-folder-with-a-thesis": lambda t, b: Case(b.argv(_thesis(t / "mine")), words=("is not a run folder", "thesis.txt"),
                                                      watch=(t / "mine",)),
    "reuse-a-run-folder": lambda t, b: Case(b.argv(b.copy(t / "run")), words=("already holds a run",), watch=(t / "run",)),
    "resume-a-typo": lambda t, b: Case(b.argv(_typo(b.copy(t / "run")), "--resume", cache=t / "cache"), words=("Cannot resume",),
                                       watch=(t / "run", t / "rnu"), fresh=(t / "cache",)),
    "resume-an-empty-folder": lambda t, b: Case(b.argv(_mk(t / "empty"), "--resume", cache=t / "cache"), words=("Cannot resume",),
                                                watch=(t / "empty",), fresh=(t / "cache",)),
    "resume-a-finished-run-without-checkpoints": lambda t, b: Case(b.argv(_rm(b.copy(t / "run"), "checkpoints"), "--resume", cache=t / "cache"),
                                                                   words=("Cannot resume",), watch=(t / "run",), fresh=(t / "cache",)),
    "resume-with-another-resolution": lambda t, b: Case(b.argv(b.copy(t / "run"), "--resume", "--resolution", "64", cache=t / "cache"),
                                                        words=("resolution",), watch=(t / "run",), fresh=(t / "cache",)),
    "resume-with-other-data": lambda t, b: Case(b.argv(b.copy(t / "run"), "--resume", "--data", b.imgs, cache=t / "cache"),
                                                words=("data",), watch=(t / "run", b.imgs), fresh=(t / "cache",)),
    "resume-without-an-intact-checkpoint": lambda t, b: Case(b.argv(_damage_all(b.copy(t / "run")), "--resume"), code=1,
                                                             words=("checkpoint-000002", "checkpoint-000004"), watch=(t / "run",)),
}


def _mk(folder:Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _typo(run:Path) -> Path:
    "The name of `run` with two letters swapped: a folder that does not exist."
    return run.with_name(run.name[0] + run.name[2] + run.name[1] + run.name[3:])


def _notes(folder:Path) -> Path:
    (folder / "notes.txt").write_text("my notes\n")
    return folder


def _rm(run:Path, name:str) -> Path:
    shutil.rmtree(run / name)
    return run


def _damage_all(run:Path) -> Path:
    for c in (run / "checkpoints").glob("checkpoint-*"): _truncate(c / "unet.safetensors")
    return run


def _refusal(name):
    def refuse(tmp, base):
        case = REFUSALS[name](tmp, base)
        before = snapshot(*case.watch)
        res = run(case.argv, cwd=case.cwd, logs=tmp / "logs")
        return dict(case=case, res=res, before=before, after=snapshot(*case.watch))
    refuse.__name__ = f"refusal_{name}"
    return refuse


for _name in REFUSALS: job(f"test_refused[{_name}]")(_refusal(_name))


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refused(results, name):
    "Each is refused with the one-line error and its exit code; nothing watched changed; a fresh cache folder stays empty."
    r = result_of(results, f"refusal_{name}")
    case, res = r["case"], r["res"]
    if case.debug:
        assert res.rc == case.code and "Traceback" in res.stderr, f"--debug shows the traceback\n{res}"
        assert any(l.startswith("t2i-train: error: ") for l in command_lines(res.stderr)), str(res)
    else:
        line = error_line(res, case.code)
        for w in case.words: assert w in line, f"the error does not name {w!r}: {line}"
    assert r["after"] == r["before"], "changed: " + "; ".join(changes(r["before"], r["after"])[:8]) + f"\n{res}"
    for c in case.fresh: assert absent_or_empty(c), f"cache work before the refusal: {sorted(p.name for p in c.iterdir())}\n{res}"


@job()
def retry_after_a_refusal(tmp, base):
    few = imagefolder(tmp / "few", 6)
    data = snapshot(few)
    refused = run(base.argv(tmp / "out", "--data", few, "--batch-size", "8", cache=tmp / "cache"), logs=tmp / "logs")
    found, cache = snapshot(tmp / "out"), absent_or_empty(tmp / "cache")
    retried = run(base.argv(tmp / "out", "--data", few, "--batch-size", "2", cache=tmp / "cache"), logs=tmp / "logs")
    return dict(refused=refused, found=found, cache=cache, retried=retried, out=tmp / "out", data=data == snapshot(few))


def test_retry_after_a_refusal(results):
    "Fewer images than a batch is refused before any cache work and leaves no folder behind, so the same command with a fixed flag trains."
    r = result_of(results, "retry_after_a_refusal")
    error_line(r["refused"], 2)
    assert r["found"] == {str(r["out"]): None}, f"the refused run left {sorted(r['found'])}"
    assert r["cache"], "cache work before the refusal"
    assert r["retried"].rc == 0 and (r["out"] / "model" / "model_index.json").is_file(), str(r["retried"])
    assert r["data"], "the data folder changed"


# ------------------------------------------------------------------------------------------ damaged run folders
@job()
def truncated_checkpoint_falls_back_to_the_older_one(tmp, base):
    run_ = base.copy(tmp / "run")
    _truncate(run_ / "checkpoints" / "checkpoint-000004" / "unet.safetensors")
    return dict(res=run(base.argv(run_, "--resume"), logs=tmp / "logs"), run=run_)


def test_truncated_checkpoint_falls_back_to_the_older_one(results, base):
    "A truncated unet.safetensors in the newest checkpoint: a warning names it, the run resumes from the one before and ends where an uninterrupted run does."
    r = result_of(results, "truncated_checkpoint_falls_back_to_the_older_one")
    res, run_ = r["res"], r["run"]
    assert res.rc == 0, str(res)
    assert any("checkpoint-000004" in l and "unet.safetensors" in l for l in res.stderr.splitlines()), f"no warning names the damaged file\n{res}"
    assert any("log.csv" in l and "drop" in l.lower() for l in res.stderr.splitlines()), f"no warning about the dropped log rows\n{res}"
    assert log_steps(run_) == [1, 2, 3, 4], log_steps(run_)
    assert unet_sha(run_) == unet_sha(base.ref), "the resumed run does not end with the weights of the uninterrupted one"
    assert not checkpoint_ok(run_ / "checkpoints" / "checkpoint-000004"), "the newest checkpoint was not rewritten"


@job()
def malformed_log_row_is_left_out_with_a_warning(tmp, base):
    run_ = base.copy(tmp / "run")
    lines = (run_ / "log.csv").read_text().splitlines(keepends=True)
    (run_ / "log.csv").write_text("".join(lines[:2] + ["oops, I edited this\n"] + lines[2:]))  # line 3
    return dict(res=run(base.argv(run_, "--resume", "--max-steps", "6"), logs=tmp / "logs"), run=run_)


def test_malformed_log_row_is_left_out_with_a_warning(results):
    "A malformed row in the middle of log.csv: a warning names its line, and the resumed run goes on to its new end."
    r = result_of(results, "malformed_log_row_is_left_out_with_a_warning")
    res, run_ = r["res"], r["run"]
    assert res.rc == 0, str(res)
    assert any("log.csv" in l and "line 3" in l for l in res.stderr.splitlines()), f"no warning names line 3 of log.csv\n{res}"
    assert log_steps(run_) == [1, 2, 3, 4, 5, 6], log_steps(run_)


def _equivalent_data(how):
    def resume(tmp, base):
        run_ = base.copy(tmp / "run", "folder_run")
        data = "imgs/" if how == "trailing-slash" else str(base.imgs)
        res = run(tiny(run_, base.folder_cache, "--data", data, "--resume", "--max-steps", "6", prompts=base.prompts), cwd=base.root, logs=tmp / "logs")
        return dict(res=res, run=run_)
    resume.__name__ = f"equivalent_data_{how}"
    return resume


for _how in ("trailing-slash", "absolute"): job(f"test_an_equivalent_data_path_is_not_a_change[{_how}]")(_equivalent_data(_how))


@pytest.mark.parametrize("how", ["trailing-slash", "absolute"])
def test_an_equivalent_data_path_is_not_a_change(results, how):
    "A run trained with `--data imgs` resumes with `--data imgs/`, and with the absolute path of imgs."
    r = result_of(results, f"equivalent_data_{how}")
    assert r["res"].rc == 0, str(r["res"])
    assert log_steps(r["run"]) == [1, 2, 3, 4, 5, 6], log_steps(r["run"])


# ---------------------------------------------------------------------------------------- what --overwrite may empty
@job()
def overwrite_empties_a_legacy_run_folder(tmp, base):
    run_ = base.copy(tmp / "run")
    (run_ / MARKER).unlink(missing_ok=True)  # as an older version wrote it: config.json naming preset and output_dir, log.csv
    return dict(res=run(base.argv(run_, "--overwrite"), logs=tmp / "logs"), run=run_)


def test_overwrite_empties_a_legacy_run_folder(results, base):
    "A run folder without the marker (config.json naming preset and output_dir, and log.csv) is one --overwrite may empty; the new run is marked."
    assert (base.ref / MARKER).is_file(), "a finished run folder has no marker"
    r = result_of(results, "overwrite_empties_a_legacy_run_folder")
    assert r["res"].rc == 0, str(r["res"])
    assert (r["run"] / MARKER).is_file() and unet_sha(r["run"]) == unet_sha(base.ref)
    assert log_steps(r["run"]) == [1, 2, 3, 4], log_steps(r["run"])
    assert not leftovers(r["run"]) and not damaged(r["run"], base.ref), (leftovers(r["run"]), damaged(r["run"], base.ref))


# -------------------------------------------------------------------------------------------------- the umask
@job()
def files_follow_the_umask(tmp, base):
    return dict(res=run(base.argv(tmp / "run"), umask=0o002, logs=tmp / "logs"), run=tmp / "run")


def _modes(run_:Path) -> dict:
    return {str(p.relative_to(run_)): oct(p.stat().st_mode & 0o777) for p in [run_, *run_.rglob("*")] if not p.is_symlink()}


def test_files_follow_the_umask(results, base):
    "Under umask 002 every file is group-writable (0664, folders 0775); under 022, 0644 and 0755."
    r = result_of(results, "files_follow_the_umask")
    assert r["res"].rc == 0, str(r["res"])
    for run_, f, d in ((r["run"], 0o664, 0o775), (base.ref, 0o644, 0o755)):
        want = {k: oct(d if (run_ / k).is_dir() else f) for k in _modes(run_)}
        wrong = {k: (v, want[k]) for k, v in _modes(run_).items() if v != want[k]}
        assert not wrong, f"{run_.name}: modes (found, wanted): {dict(list(wrong.items())[:8])}"
    assert (r["run"] / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


# -------------------------------------------------------------------------------------------------- full disks
DISK_FULL = {  # id -> (the fault, a fresh cache folder?)
    "second-checkpoint": (fault("save_file", r"checkpoint-000004"), False),
    "log-append": (fault("write", r"/log\.csv$", nth=3), False),
    "sample-grid": (fault("image_save", r"step_000004\.png"), False),
    "config-json": (fault("write", "{run}/[^/]*config\\.json[^/]*$"), False),
    "latent-cache": (fault("pwrite", r"latents-"), True),
}


def _disk_full(name):
    def fill(tmp, base):
        spec, fresh = DISK_FULL[name]
        cache = tmp / "cache" if fresh else base.cache
        spec = {**spec, "match": spec["match"].replace("{run}", re.escape(str(tmp / "run")))}
        res = run(base.argv(tmp / "run", cache=cache), faults=[spec], logs=tmp / "logs")
        return dict(res=res, run=tmp / "run", cache=cache)
    fill.__name__ = f"disk_full_{name}"
    return fill


for _name in DISK_FULL: job(f"test_disk_full[{_name}]")(_disk_full(_name))


@pytest.mark.parametrize("name", list(DISK_FULL))
def test_disk_full(results, base, name):
    """ENOSPC at one write of a fresh run: exit 1, one line naming the path, how much it needs and how much is free;
    every file written before is what an uninterrupted run writes; no temporary files; a run that failed before its
    first step leaves no folder."""
    r = result_of(results, f"disk_full_{name}")
    res, run_ = r["res"], r["run"]
    path = disk_full_path(res)
    where = r["cache"] if name.endswith("cache") else run_
    assert inside(path, where), f"the message names {path}, not a path in {where}"
    assert not leftovers(run_), f"left behind: {leftovers(run_)}"
    assert not damaged(run_, base.ref), f"damaged: {damaged(run_, base.ref)}"
    if name == "latent-cache":
        assert not run_.exists(), f"the run failed before its first step but left {sorted(p.name for p in run_.iterdir())}"
    if name == "second-checkpoint": assert not checkpoint_ok(run_ / "checkpoints" / "checkpoint-000002")


@job()
def disk_full_keeps_the_finished_model(tmp, base):
    run_ = base.copy(tmp / "run")
    kept = [run_ / "model", run_ / "samples" / "step_000002.png", run_ / "samples" / "step_000004.png", run_ / "heldout.json",
            run_ / "samples" / "final.png"]
    before = snapshot(*kept)
    res = run(base.argv(run_, "--resume", "--max-steps", "6"), faults=[fault("save_file", r"\.tmp-model-")], logs=tmp / "logs")
    return dict(res=res, run=run_, before=before, after=snapshot(*kept))


def test_disk_full_keeps_the_finished_model(results):
    "A resumed run that cannot write its new model for a full disk leaves the old model and grids byte for byte."
    r = result_of(results, "disk_full_keeps_the_finished_model")
    path = disk_full_path(r["res"])
    assert inside(path, r["run"]), path
    assert r["after"] == r["before"], "changed: " + "; ".join(changes(r["before"], r["after"])[:8])
    assert not leftovers(r["run"]), leftovers(r["run"])
    assert not checkpoint_ok(r["run"] / "checkpoints" / "checkpoint-000006"), "the checkpoint of step 6 is not intact"


# ------------------------------------------------------------------------------------------------------- stops
@job("test_stop_during_setup[SIGINT-filling-the-latent-cache]", "test_stop_during_setup[SIGTERM-loading-the-data]",
     "test_next_start_removes_stopped_and_orphaned_cache_fills")
def setup_stops(tmp, base):
    cache, out = tmp / "cache", {}
    argv = lambda run_, c=cache: base.argv(run_, cache=c)
    # a SIGKILL while the latent cache fills: its temporary folder is orphaned
    p = Proc(argv(tmp / "killed"), faults=[fault("pwrite", r"\.tmp-latents", action="pause", seconds=120, flag=tmp / "f1")], logs=tmp / "logs")
    out["killed_hit"] = p.signal_when(flagged(tmp / "f1"), signal.SIGKILL)
    p.result()
    out["orphans"] = sorted(q.name for q in cache.glob(".tmp-*"))
    # a SIGINT at the same moment, into a folder that did not exist
    p = Proc(argv(tmp / "new"), faults=[fault("pwrite", r"\.tmp-latents", action="pause", seconds=120, flag=tmp / "f2")], logs=tmp / "logs")
    out["sigint_hit"] = p.signal_when(flagged(tmp / "f2"), signal.SIGINT)
    out["sigint"], out["sigint_found"] = p.result(), snapshot(tmp / "new")
    # a SIGTERM while the data loads, into an empty folder
    (tmp / "empty").mkdir()
    p = Proc(argv(tmp / "empty", tmp / "cache3"), faults=[fault("call", "text2imagegen.train:load_images", action="pause", seconds=120, flag=tmp / "f3")],
             logs=tmp / "logs")
    out["sigterm_hit"] = p.signal_when(flagged(tmp / "f3"), signal.SIGTERM)
    out["sigterm"], out["sigterm_found"] = p.result(), snapshot(tmp / "empty")
    # the next start on the same caches
    out["next"] = run(argv(tmp / "next"), logs=tmp / "logs")
    out["after_next"] = sorted(q.name for q in cache.glob(".tmp-*"))
    out.update(new=tmp / "new", empty=tmp / "empty")
    return out


@pytest.mark.parametrize("how", ["SIGINT-filling-the-latent-cache", "SIGTERM-loading-the-data"])
def test_stop_during_setup(results, how):
    "A stop during set-up: exit 130, one summary naming the signal and the command that continues; the run folder as it was found."
    r = result_of(results, "setup_stops")
    sig = how.split("-")[0]
    key = sig.lower()
    assert r[f"{key}_hit"], f"the run never reached the moment to stop it\n{r[key]}"
    line = summary_line(r[key], sig)
    folder = r["new"] if sig == "SIGINT" else r["empty"]
    assert str(folder) in line, f"the summary names no command that continues into {folder}: {line}"
    assert r[f"{key}_found"] == ({str(folder): None} if sig == "SIGINT" else {str(folder): "dir"}), \
        f"the run folder is not as it was found: {sorted(r[f'{key}_found'])}"


def test_next_start_removes_stopped_and_orphaned_cache_fills(results):
    "The temporary cache folders of a SIGKILLed fill and of a stopped one are gone after the next start, which trains."
    r = result_of(results, "setup_stops")
    assert r["killed_hit"] and r["orphans"], f"the SIGKILLed fill left no temporary folder to clean: {r['orphans']}"
    assert r["next"].rc == 0, str(r["next"])
    assert r["after_next"] == [], f"left in the cache folder: {r['after_next']}"


@job()
def stop_during_the_final_save(tmp, base):
    p = Proc(base.argv(tmp / "run"), faults=[fault("save_file", r"\.tmp-model-", action="pause", seconds=120, flag=tmp / "flag")], logs=tmp / "logs")
    hit = p.signal_when(flagged(tmp / "flag"), signal.SIGINT)
    res = p.result()
    out = dict(hit=hit, res=res, run=tmp / "run", left=leftovers(tmp / "run"))
    command = continue_command(summary_line(res, "SIGINT")) if res.rc == 130 else None
    if command: out["continued"] = run(command, logs=tmp / "logs")
    return out


def test_stop_during_the_final_save(results, base):
    "SIGINT while the model is saved: exit 130, a summary with the command that continues, no temporary copies; that command ends with the uninterrupted weights."
    r = result_of(results, "stop_during_the_final_save")
    assert r["hit"], str(r["res"])
    line = summary_line(r["res"], "SIGINT")
    assert not r["left"], f"left behind: {r['left']}"
    assert continue_command(line), f"the summary names no command that continues: {line}"
    assert r["continued"].rc == 0, str(r["continued"])
    assert unet_sha(r["run"]) == unet_sha(base.ref)


@job()
def stop_while_the_final_grid_is_drawn(tmp, base):
    p = Proc(base.argv(tmp / "run"), faults=[fault("image_save", r"final\.png", action="pause", seconds=120, flag=tmp / "flag")], logs=tmp / "logs")
    hit = p.signal_when(flagged(tmp / "flag"), signal.SIGTERM)
    return dict(hit=hit, res=p.result(), run=tmp / "run")


def test_stop_while_the_final_grid_is_drawn(results, base):
    "SIGTERM while the final grid is drawn: exit 130, one summary; the saved model is whole, no torn grid, no temporary files."
    r = result_of(results, "stop_while_the_final_grid_is_drawn")
    assert r["hit"], str(r["res"])
    summary_line(r["res"], "SIGTERM")
    run_ = r["run"]
    assert unet_sha(run_) == unet_sha(base.ref)
    final = run_ / "samples" / "final.png"
    assert not final.exists() or png_ok(final), "a torn final.png"
    assert not leftovers(run_), leftovers(run_)
    assert not damaged(run_, base.ref), damaged(run_, base.ref)


@job()
def stop_in_the_training_loop(tmp, base):
    p = Proc(base.argv(tmp / "run"), faults=[fault("write", r"/log\.csv$", nth=2, action="pause", seconds=3, flag=tmp / "flag")], logs=tmp / "logs")
    hit = p.signal_when(flagged(tmp / "flag"), signal.SIGINT)
    res = p.result()
    out = dict(hit=hit, res=res, run=tmp / "run")
    m = re.search(r"Continue with: (.*)", res.stdout + res.stderr)
    out["stopped_model"] = (tmp / "run" / "model").exists()
    if m: out["continued"] = run(shlex.split(m.group(1))[1:], logs=tmp / "logs")
    return out


def test_stop_in_the_training_loop(results, base):
    "SIGINT at step 2: a checkpoint, 'Continue with: ...', and that command ends with the weights of an uninterrupted run."
    r = result_of(results, "stop_in_the_training_loop")
    res = r["res"]
    assert r["hit"] and res.rc in (0, 130) and "Traceback" not in res.stderr, str(res)
    assert "continued" in r, f"no 'Continue with:' line\n{res}"
    assert not r["stopped_model"], "the stopped run saved a model: it did not stop at step 2"
    assert r["continued"].rc == 0, str(r["continued"])
    assert unet_sha(r["run"]) == unet_sha(base.ref)


# --------------------------------------------------------------------------------------- sequences of actions
MODES = {"start": [], "resume": ["--resume"], "overwrite": ["--overwrite"]}
OUTS = ("new", "empty", "notes", "parent", "data", "inside-data")


@st.composite
def worlds(draw):
    "A parent folder's layout: the user's data folder, unrelated files, and which folder the run is pointed at."
    name = st.text(alphabet="abcxyz _-", min_size=1, max_size=6).map(str.strip).filter(lambda s: s and not s.startswith("-"))
    files = draw(st.dictionaries(name.map(lambda s: s + ".txt"), st.binary(max_size=64), min_size=1, max_size=3))
    return dict(data=draw(st.sampled_from(["photos", "my data"])), files=files, out=draw(st.sampled_from(OUTS)))


ACTIONS = st.tuples(st.sampled_from(["run", "stop", "kill"]), st.sampled_from(list(MODES)), st.sampled_from([1.0, 4.0, 7.0, 10.0]))


def _model(out:Path):
    "The content of a finished model in `out`: model/, or after a SIGKILL between two renames, its complete hidden copy."
    if (out / "model" / "model_index.json").is_file(): return {k[len(str(out / "model")):]: v for k, v in snapshot(out / "model").items()}
    for hidden in sorted(out.glob(".*-model-*")):
        if (hidden / "model_index.json").is_file(): return {k[len(str(hidden)):]: v for k, v in snapshot(hidden).items()}
    return None


@pytest.fixture(scope="module")
def world_cache(tmp_path_factory): return tmp_path_factory.mktemp("world_cache")


@settings(max_examples=3, deadline=None, derandomize=True, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(world=worlds(), actions=st.lists(ACTIONS, min_size=1, max_size=3))
@example(world=dict(data="photos", files={"todo.txt": b"buy milk"}, out="new"),
         actions=[("run", "start", 0.0), ("kill", "resume", 7.0), ("run", "start", 0.0), ("run", "resume", 0.0)])
def test_sequences_never_lose_user_files(base, world_cache, world, actions):
    """Any sequence of runs, stops (SIGINT), kills (SIGKILL), resumes and overwrites, pointed at any folder: after
    every action the files the project did not write are unchanged, nothing appears in the data folder, and a
    finished model is replaced only by an --overwrite."""
    with tempfile.TemporaryDirectory(prefix="t2i-world-") as d:
        parent = Path(d) / "project"
        data = shutil.copytree(base.imgs, parent / world["data"])
        for n, b in world["files"].items(): (parent / n).write_bytes(b)
        (parent / "notes").mkdir(); (parent / "notes" / "draft.md").write_text("# draft\n")
        out = {"new": parent / "run", "empty": parent / "empty", "notes": parent / "notes", "parent": parent,
               "data": data, "inside-data": data / "run"}[world["out"]]
        if world["out"] == "empty": out.mkdir()
        user = snapshot(parent)  # everything there is the user's
        data_listing = snapshot(data)
        history = []
        for kind, mode, delay in actions:
            model = _model(out) if out.is_dir() else None
            p = Proc([*tiny(out, world_cache, "--data", data, prompts=base.prompts), *MODES[mode]], logs=Path(d) / "logs")
            if kind != "run":
                time.sleep(delay)
                if p.p.poll() is None: p.p.send_signal(signal.SIGINT if kind == "stop" else signal.SIGKILL)
            res = p.result()
            history.append(f"{kind} {mode} (after {delay:g} s): exit {res.rc}")
            now = snapshot(parent)
            lost = {k: v for k, v in user.items() if now.get(k) != v}
            assert not lost, f"user files changed after {history}: {sorted(lost)}\n{res}"
            assert snapshot(data) == data_listing, f"the data folder changed after {history}: {changes(data_listing, snapshot(data))[:5]}"
            if model is not None and mode != "overwrite":
                assert _model(out) == model, f"the finished model was replaced after {history}\n{res}"
            if kind != "kill":
                assert "Traceback" not in res.stderr, f"a traceback after {history}\n{res}"
                assert res.rc in ((0, 2) if kind == "run" else (0, 2, 130)), f"exit code {res.rc} after {history}\n{res}"
