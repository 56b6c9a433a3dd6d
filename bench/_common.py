"""What the benchmark scripts share: a subprocess runner that reports peak memory, the machine's description,
markdown tables, and the measurements more than one script makes.

A script run as `python bench/x.py` has `bench/` on `sys.path`, so it imports these with `from _common import ...`.
Importing this module loads no torch: the measurements import what they need when called.
"""
from __future__ import annotations
import gc, json, math, os, platform, re, subprocess, sys, tempfile, time
from dataclasses import dataclass
from pathlib import Path


# --- running a subprocess and measuring it --------------------------------------------------------------------------

@dataclass
class Finished:
    "A finished subprocess: its exit code, wall-clock seconds, peak resident memory (MB, from `wait4`) and output."
    returncode:int
    seconds:float
    peak_mb:float
    stdout:str
    stderr:str


def run_measured(cmd:list,          # the command and its arguments
                 check:bool=True,   # raise `RuntimeError` with the tail of stderr when it fails
                 what:str=None,     # how the error names it (default: the command)
                 env:dict=None,     # its environment (default: this process's)
                 cwd:str=None,      # its working folder
                 tail:int=3000,     # characters of stderr in the error
                ) -> Finished:
    "Run `cmd` to its end and measure it: its output goes to temporary files, so a chatty child never blocks on a full pipe."
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd)
        try: _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: the child goes too
            proc.kill(); proc.wait(); raise
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
        out.seek(0); err.seek(0)
        done = Finished(proc.returncode, seconds, usage.ru_maxrss / 1024, out.read().decode(errors="replace"),
                        err.read().decode(errors="replace"))
    if check and done.returncode != 0:
        raise RuntimeError(f"{what or ' '.join(map(str, cmd))} failed (exit code {done.returncode}):\n{done.stderr[-tail:]}")
    return done


def run_worker(script:str,        # a benchmark script that takes `--worker-spec FILE`
               spec:dict,         # what the worker does; it writes its numbers as JSON to `spec["out"]`
               work:Path,         # folder for the spec file
               what:str="the worker", # how an error names it
              ) -> dict:
    "Run `script --worker-spec` on `spec` in a fresh Python process: the numbers it wrote, and its peak RSS as `peak_rss_mb`."
    spec_file = Path(work) / "spec.json"
    spec_file.write_text(json.dumps(spec))
    done = run_measured([sys.executable, script, "--worker-spec", spec_file], what=what)
    return dict(**json.loads(Path(spec["out"]).read_text()), peak_rss_mb=done.peak_mb)


# --- the machine ----------------------------------------------------------------------------------------------------

def machine_info() -> dict:
    "This machine: CPU model and cores, the CPU's bf16 instructions, platform, torch version and threads, GPU name (None without one)."
    import torch
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model, flags = re.search(r"^model name\s*:\s*(.*)$", text, re.M), re.search(r"^flags\s*:(.*)$", text, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    return dict(cpu=model.group(1) if model else platform.processor() or "unknown CPU", cores=os.cpu_count(),
                **{f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")},
                platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                threads=torch.get_num_threads(), gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)


def machine_line(info:dict=None) -> str:
    "One line for a report: CPU, cores, torch and its threads, GPU."
    m = info or machine_info()
    return f"CPU: {m['cpu']} ({m['cores']} cores), torch {m['torch']}, {m['threads']} threads; GPU: {m['gpu'] or 'none'}"


# --- markdown tables ------------------------------------------------------------------------------------------------

def format_number(x) -> str:
    "Integers with thousands separators; other numbers to 3 significant digits (no exponent from 0.001 to 10^15)."
    if isinstance(x, bool) or not isinstance(x, (int, float)): return str(x)
    if isinstance(x, int): return f"{x:,}"
    if x == 0 or math.isnan(x) or math.isinf(x): return f"{x:g}"
    if not 1e-3 <= abs(x) < 1e15: return f"{x:.2e}"
    return f"{x:,.{max(0, 2 - math.floor(math.log10(abs(x))))}f}"


def table_header(columns:list) -> str:
    "The first two lines of a markdown table; for scripts that print each row as it is measured."
    return "| " + " | ".join(map(str, columns)) + " |\n" + "|" + "---|" * len(columns)


def table_row(cells:list) -> str:
    "One markdown table line, numbers formatted by `format_number`; None shows as `-`; text cells are kept as they are."
    return "| " + " | ".join("-" if v is None else format_number(v) for v in cells) + " |"


def markdown_table(rows:list,          # dicts (the columns are their keys, or `columns`) or lists (the cells in order)
                   columns:list=None,  # the header; for dicts, the keys to show in this order
                   headers:dict=None,  # for dicts: {key: header text} where the header differs from the key
                  ) -> str:
    "A markdown table of `rows`: `table_header`, then a `table_row` per row."
    rows = list(rows)
    if columns is None: columns = list(dict.fromkeys(k for r in rows for k in r)) if rows and isinstance(rows[0], dict) else []
    cells = [[r.get(c) for c in columns] if isinstance(r, dict) else list(r) for r in rows]
    return "\n".join([table_header([(headers or {}).get(c, c) for c in columns])] + [table_row(row) for row in cells])


# --- devices (the GPU rows) -----------------------------------------------------------------------------------------

def sync(device):
    "Wait for the GPU's queued work (nothing to wait for on the CPU)."
    import torch
    if device.type == "cuda": torch.cuda.synchronize()


def reset_memory(device):
    "Collect garbage; on a GPU, empty the cache and restart the peak-memory count."
    import torch
    gc.collect()
    if device.type == "cuda": torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()


def peak_gb(device) -> float|None:
    "Peak GPU memory allocated since the last `reset_memory` (GB); None on the CPU."
    import torch
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def sampling_rows(model:Path, # a saved pipeline folder
                  resolution:int, # image side in pixels
                  batches:list, # batch sizes
                  steps:int, # denoising steps
                  device, # torch device
                  prompts:list, # at least max(batches) prompts
                  dtype=None, # weights' dtype (None: float32)
                  compile:bool=False, # also time `generate` with the UNet compiled
                  rounds:int=5, # interleaved rounds; each way keeps its fastest
                 ) -> list:
    "Seconds per batch of `generate`, of `StableDiffusionPipeline` on the same components (SD architecture), and of the UNet alone."
    import torch
    from diffusers import StableDiffusionPipeline
    from text2imagegen.model import is_sd_architecture, load_pipeline
    from text2imagegen.sample import generate, make_sampler
    pipe = load_pipeline(model, dtype=dtype or torch.float32).to(device)
    pipe.set_progress_bar_config(disable=True)
    ways = {"generate (project)": lambda b, n: generate(pipe, prompts[:b], steps=n, guidance_scale=7.5, scheduler="dpm++2m", seed=0,
                                                       batch_size=b, height=resolution, width=resolution, progress=False)}
    if is_sd_architecture(pipe):
        sd = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                                     scheduler=make_sampler("dpm++2m", pipe), safety_checker=None, feature_extractor=None,
                                     requires_safety_checker=False).to(device)
        sd.set_progress_bar_config(disable=True)
        ways["StableDiffusionPipeline"] = lambda b, n: sd(prompts[:b], num_inference_steps=n, guidance_scale=7.5, height=resolution,
                                                          width=resolution, generator=[torch.Generator("cpu").manual_seed(s) for s in range(b)]).images

    @torch.no_grad()
    def unet_alone(b, n):
        hidden, pooled = pipe.encode_prompt(prompts[:b] + [""] * b)  # encoded once, outside the steps
        hidden, pooled = hidden.to(device), None if pooled is None else pooled.to(device)
        x = torch.randn(2 * b, *pipe.model_space_shape(resolution, resolution), device=device, dtype=pipe.unet.dtype)
        for t in range(n): pipe.predict(x, torch.tensor(999 - t), hidden, pooled)
    ways["UNet alone"] = unet_alone

    rows, floor = [], {}
    def timed(way, b):
        reset_memory(device); t0 = time.perf_counter()
        way(b, steps); sync(device)
        return time.perf_counter() - t0
    for b in batches:
        for way in ways.values(): way(b, 2); sync(device)  # warm-up
        best = {k: float("inf") for k in ways}; peaks = {}
        for _ in range(rounds):  # interleaved; the fastest run of each way
            for name, way in ways.items(): best[name] = min(best[name], timed(way, b)); peaks[name] = peak_gb(device)
        floor[b] = best["UNet alone"]
        rows += [dict(task="sample", how=name, px=resolution, batch=b, steps=steps, it_per_s=steps / best[name], seconds=best[name],
                      over_unet=best[name] / floor[b], peak_gb=peaks[name]) for name in ways]
    if compile:  # last: the UNet object is shared, so every way above ran uncompiled
        pipe.unet.compile()
        for b in batches:
            t0 = time.perf_counter(); ways["generate (project)"](b, 2); sync(device); compile_s = time.perf_counter() - t0
            best = min(timed(ways["generate (project)"], b) for _ in range(rounds))
            rows.append(dict(task="sample", how="generate + torch.compile (t2i-sample --compile)", px=resolution, batch=b, steps=steps,
                             it_per_s=steps / best, seconds=best, over_unet=best / floor[b], peak_gb=peak_gb(device), compile_s=compile_s))
    return rows



# --- training speed: the trainer against the step diffusers' example takes ----------------------------------------

def write_images(folder:Path, n:int, size:tuple) -> list:
    "`n` smooth random landscape JPEGs with captions in an imagefolder (metadata.jsonl); returns the captions."
    import numpy as np
    from PIL import Image
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
    from PIL import Image
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
                              mixed_precision=mixed_precision, ema_decay=0, val_size=4, probe_per_category=0, probe_images=0, cache_dir=str(work / "cache"), overwrite=True,
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
    import torch
    import torch.nn.functional as F
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
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=g, device=device)
        with acc.autocast():
            pred = pipe.predict(noise_scheduler.add_noise(x0, noise, t), t, hidden.to(device), None if pooled is None else pooled.to(device), unet=unet)
        loss = F.mse_loss(pred.float(), training_target(noise_scheduler, x0, noise, t).float())
        acc.backward(loss); acc.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)

    try:
        seconds = timed_steps(step, device, warmup, steps)
        return dict(images_per_s=batch / seconds, peak_gb=peak_gb(device), trainable=trainable, setup_s=setup)
    finally:
        del pipe, unet, opt, pixels; reset_memory(device)




# --- quality along training: snapshots of the EMA model, scored with the adherence benchmark -----------------------

def save_snapshot(trainer, folder:Path) -> float:
    "Save the trainer's EMA pipeline to `folder`; returns the seconds it took."
    t0 = time.time()
    with trainer.ema_weights(): trainer.pipe.save_pretrained(folder)
    return time.time() - t0


class SnapshotCallback:  # a `text2imagegen.train.Callback`: the trainer calls its events
    "Save the EMA pipeline to `snapshots/step_*` at each mark, after the step's own work; saving time is left out of the budget."
    def __init__(self, minutes:list=(), # wall-clock minutes (since the trainer started) to snapshot at
                 images:list=(), # or: images seen to snapshot at
                ):
        self.marks = sorted([("minutes", m) for m in minutes] + [("images", m) for m in images], key=lambda m: m[1])
        self.points, self.overhead_s, self.first_step_s = [], 0.0, None

    def before_fit(self, trainer):
        c = trainer.config  # resolved values
        self.per_step = c.batch_size * c.grad_accum * trainer.accelerator.num_processes

    def after_step(self, trainer):
        elapsed = time.time() - trainer.t_start
        if self.first_step_s is None: self.first_step_s = elapsed
        seen = trainer.step * self.per_step
        due = [m for m in self.marks if (elapsed >= m[1] * 60 if m[0] == "minutes" else seen >= m[1])]
        if not due or trainer.last: return
        for m in due: self.marks.remove(m)
        folder = trainer.run_dir / "snapshots" / f"step_{trainer.step:06d}"
        dt = save_snapshot(trainer, folder)
        trainer.t_start += dt  # the budget excludes the time spent saving snapshots
        self.overhead_s += dt
        self.points.append(dict(label=f"{elapsed / 60:.1f} min", path=str(folder), minutes=elapsed / 60, step=trainer.step,
                                images_seen=seen, images_per_s=trainer.images_per_s, save_s=dt))
        print(f"snapshot at {elapsed / 60:.2f} min, step {trainer.step}, {seen} images seen -> {folder}", flush=True)


def train_with_snapshots(config, # the run's `TrainConfig` (its output_dir gets `snapshots/`)
                         minutes:list=(), # wall-clock minutes (since the trainer started) to snapshot at
                         images:list=(), # or: images seen to snapshot at (used by the recipe search)
                        ) -> dict:
    "Train `config`, saving the EMA pipeline at the given marks; returns the run folder, snapshots and timings."
    from text2imagegen.train import Trainer, read_log
    snapshots = SnapshotCallback(minutes, images)
    trainer = Trainer(config, callbacks=[snapshots])
    t_trainer = trainer.t_start
    run_dir = trainer.fit()
    end, per_step = time.time(), snapshots.per_step
    final = dict(label="final", path=str(Path(run_dir) / "model"), minutes=(end - trainer.t_start) / 60, step=trainer.step,
                 images_seen=trainer.step * per_step, images_per_s=None, save_s=0.0)
    rows = [r for r in read_log(Path(run_dir) / "log.csv") if r.get("images_per_s")]
    steady = sorted(r["images_per_s"] for r in rows[len(rows) // 5:]) or [float("nan")]  # skip the first fifth (warm-up)
    loop_s = end - t_trainer - snapshots.overhead_s - (snapshots.first_step_s or 0)
    return {"run_dir": str(run_dir), "points": snapshots.points + [final],
            "timing": {"setup_s": snapshots.first_step_s, "snapshot_overhead_s": snapshots.overhead_s,
                       "train_wall_s": end - t_trainer - snapshots.overhead_s,
                       "images_per_s_median": steady[len(steady) // 2],
                       "images_per_s_overall": final["images_seen"] / loop_s if loop_s > 0 else None}}


def score_point(path:str, # pipeline folder
                guidance:list, # guidance scales
                judge, # the Shapes judge
                n_per_prompt:int=1, # images per prompt
                per_category:int|None=None, # first n prompts per category
                categories=None, # benchmark categories (None: all)
                steps:int|None=None, # denoising steps (None: the model's default)
                scheduler:str|None=None, # sampler (None: the model's default)
                seed:int=0, # benchmark seed
                report_dir:Path|None=None, # write the full adherence report of each guidance here
                batch_size:int=64, # images per pipeline call
               ) -> list:
    "Adherence benchmark of one saved model at each guidance scale: one row per (guidance, category)."
    from text2imagegen.judge import adherence_benchmark, write_adherence_report
    from text2imagegen.model import load_pipeline
    pipe = load_pipeline(path)
    rows = []
    for g in guidance:
        t0 = time.time()
        rep = adherence_benchmark(pipe, n_per_prompt=n_per_prompt, seed=seed, judge=judge, categories=categories,
                                  per_category=per_category, progress=False, guidance_scale=g, steps=steps, scheduler=scheduler,
                                  batch_size=batch_size)
        s_per_image = (time.time() - t0) / len(rep["results"])
        if report_dir is not None: write_adherence_report(rep, Path(report_dir) / f"guidance_{g:g}")
        st = rep["settings"]
        for c, s in {**rep["categories"], "overall": rep["overall"]}.items():
            rows.append(dict(guidance=g, scheduler=st["scheduler"], steps=st["steps"], category=c, score=s["score"],
                             passed=s["passed"], n=s["n"], ci_lo=s["ci95"][0], ci_hi=s["ci95"][1], sample_s_per_image=s_per_image,
                             clauses=json.dumps(s["clauses"])))  # per-clause pass rates: signal before whole prompts pass
    return rows
