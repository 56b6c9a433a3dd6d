"""Training speed-ups: which changes make the tiny preset's default training step faster on this CPU?

Every attempt gets its own `Trainer` of `t2i-train`'s default (the tiny preset, 32 px, batch 32) on a small Shapes
pool, built once with its change applied. Then, for each of `--rounds` rounds and each attempt in turn (the order
rotates every round), `--warmup` untimed and `--steps` timed calls of `Trainer.train_step`: interleaved, so a
busy machine slows every attempt alike and the per-round ratios to the default stay fair. All trainers start from
the same weights and draw the same batches, so their losses are compared step by step with the default's.

It also prints a torch.profiler table of one default step (top ops by self CPU time, and the step's phases) and
times what a default run does besides training steps: validation (`val_loss`, `sample_grid`, the loss-curve plot)
and `checkpoint`, each as seconds and as default steps, and their share of a whole default run.

    python bench/train_speedups.py                                  # every attempt, 4 rounds of 1 + 5 steps
    python bench/train_speedups.py --attempts default,adamw_fused   # a few
    python bench/train_speedups.py --smoke                          # 1 round of 1 + 2 steps: checks the script runs
"""
from __future__ import annotations
import contextlib, json, os, statistics, tempfile, time, types
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from fastcore.script import call_parse
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

for lib in (diffusers_logging, transformers_logging): lib.set_verbosity_error(); lib.disable_progress_bar()
import text2imagegen.train as train_module
from text2imagegen.train import TrainConfig, Trainer, plot_loss_curve, start_log, log_line

from _common import machine_info, markdown_table


class Skip(Exception): "An attempt this machine cannot run; the message says why."


@dataclass
class Attempt:
    "A trainer with one change applied, and what to do around its timed steps."
    name:str
    changes:str
    trainer:Trainer
    enter:callable = lambda: None  # before its warm-up steps, every round
    exit:callable = lambda: None   # after its timed steps, every round
    note:str = ""
    info:dict = field(default_factory=dict)


# --- the attempts: each builds its trainer with `make(**TrainConfig overrides)` and applies its change -----------------

def default(make, threads):
    return Attempt("default", "nothing: `t2i-train`'s step as it is", make())

def compile_unet(make, threads):
    import shutil
    if not (shutil.which("g++") or shutil.which("c++")): raise Skip("inductor needs a C++ compiler (g++) on the CPU")
    tr = make(); tr.unet.compile()  # compiled at the first call, the first warm-up step
    return Attempt("compile", "`torch.compile` of the UNet (inductor), forward and backward", tr,
                   note="compiling costs the first step; compile time below")

def adamw_fused(make, threads):
    made = {}
    def fused(name, params, lr, weight_decay):
        made["optimizer"] = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        return made["optimizer"]
    with _swapped(train_module, "make_optimizer", fused): tr = make()
    if not made["optimizer"].defaults["fused"]: raise Skip("this torch has no fused AdamW for the CPU")
    return Attempt("adamw_fused", "AdamW `fused=True` (the trainer's is `foreach=True`)", tr)

def _ema_every(k):
    def attempt(make, threads):
        return Attempt(f"ema_every{k}", f"EMA updated every {k} steps (`ema_every={k}`)", make(ema_every=k),
                       note="the EMA weights average fewer snapshots: a quality question, not only speed")
    attempt.__name__ = f"ema_every{k}"
    return attempt

def ema_off(make, threads):
    return Attempt("ema_off", "no EMA (`ema_decay=0`): the most any EMA change can save", make(ema_decay=0),
                   note="a bound, not a candidate: the EMA weights are the model")

def bf16(make, threads):
    tr = make(mixed_precision="bf16")
    def enter():  # accelerate keeps the autocast dtype in process-wide state; this trainer must be the last one built
        if tr.accelerator.mixed_precision != "bf16": raise RuntimeError("the bf16 trainer's accelerate state was reset")
    cpu = machine_info()
    hw = "AMX" if cpu["amx_bf16"] else "AVX-512 BF16, no AMX" if cpu["avx512_bf16"] else "no bf16 instructions"
    return Attempt("bf16", "bf16 autocast (`mixed_precision=\"bf16\"`)", tr, enter=enter, note=f"this CPU: {hw}")

def channels_last(make, threads):
    tr = make()
    tr.unet.to(memory_format=torch.channels_last)  # the weights, in place: the optimizer still holds the same tensors
    def to_cl(module, args, kwargs): return (args[0].contiguous(memory_format=torch.channels_last), *args[1:]), kwargs
    tr.unet.register_forward_pre_hook(to_cl, with_kwargs=True)  # and its input
    return Attempt("channels_last", "channels_last memory format for the UNet's weights and input", tr)

def threads1(make, threads):
    if threads < 2: raise Skip("--threads is already 1")
    return Attempt("threads1", f"`torch.set_num_threads(1)` (the default: {threads})", make(),
                   enter=lambda: torch.set_num_threads(1), exit=lambda: torch.set_num_threads(threads),
                   note="a second process could use the other core")

def fewer_copies(make, threads):
    "The micro-batch reader without its round trip through `encode_images` (a one-chunk `torch.cat`, `.float().cpu()`)."
    tr = make()
    if tr.pipe.vae is not None: raise Skip("only for a pixel-space model")
    def batch_inputs(self, k):
        epoch, idx, x = self.batches[k]
        if x.is_floating_point(): return epoch, idx, x
        with torch.no_grad(): return epoch, idx, self.pipe.to_model_space(x.float().div_(127.5).sub_(1))
    tr.batch_inputs = types.MethodType(batch_inputs, tr)
    return Attempt("fewer_copies", "uint8 pixels to model space in place, without `encode_images`' cat and copies", tr)

ATTEMPTS = {"default": default, "compile": compile_unet, "adamw_fused": adamw_fused, "ema_every4": _ema_every(4),
            "ema_every10": _ema_every(10), "ema_off": ema_off, "channels_last": channels_last, "threads1": threads1,
            "fewer_copies": fewer_copies, "bf16": bf16}  # bf16 is built last: see `bf16`


@contextlib.contextmanager
def _swapped(obj, name, value):
    before = getattr(obj, name); setattr(obj, name, value)
    try: yield
    finally: setattr(obj, name, before)


# --- measuring ------------------------------------------------------------------------------------------------------

def run_steps(a:Attempt, n:int) -> list:
    "`n` training steps of `a`'s trainer, as `fit` takes them; their losses."
    losses = []
    for _ in range(n):
        losses.append(a.trainer.train_step()); a.trainer.step += 1
    return losses


PHASES = {"batch_inputs": "read micro-batch", "caption_ids": "pick captions"}

def profile_step(tr:Trainer, out:Path, rows:int=15) -> float:
    "One training step under torch.profiler; writes `profile.txt` (top ops by self CPU time, the step's phases); returns its loss."
    from torch.profiler import ProfilerActivity, profile, record_function
    def labelled(label, fn):
        def wrapper(*args, **kwargs):
            with record_function(f"## {label}"): return fn(*args, **kwargs)
        return wrapper
    acc, opt = tr.accelerator, tr.optimizer
    patches = [(tr, "batch_inputs", "read micro-batch"), (tr.captions, "lookup", "caption states (read + whiten)"),
               (acc, "backward", "backward"), (acc, "clip_grad_norm_", "clip grad norm"), (opt, "step", "optimizer step"),
               (opt, "zero_grad", "zero grad"), (tr, "ema_step", "EMA update")]
    with contextlib.ExitStack() as stack:
        for obj, name, label in patches: stack.enter_context(_swapped(obj, name, labelled(label, getattr(obj, name))))
        stack.enter_context(_swapped(train_module, "batch_loss", labelled("forward + loss", train_module.batch_loss)))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with record_function("## train_step"): loss = tr.train_step()
        tr.step += 1
    events = prof.key_averages()
    ops = events.table(sort_by="self_cpu_time_total", row_limit=rows)
    phases = {e.key[3:]: e.cpu_time_total / 1e3 for e in events if e.key.startswith("## ")}
    step_ms = phases.pop("train_step")
    lines = ["| phase | ms | share of the step |", "|---|---|---|"]
    lines += [f"| {k} | {ms:.1f} | {ms / step_ms:.0%} |" for k, ms in sorted(phases.items(), key=lambda kv: -kv[1])]
    lines += [f"| rest (noise, timesteps, loss reduce, LR schedule) | {step_ms - sum(phases.values()):.1f} | "
              f"{(step_ms - sum(phases.values())) / step_ms:.0%} |", f"| whole step (under the profiler) | {step_ms:.1f} | 100% |"]
    text = f"Top {rows} ops of one training step by self CPU time:\n\n{ops}\nPhases of the step:\n\n" + "\n".join(lines) + "\n"
    (out / "profile.txt").write_text(text)
    return loss


def run_count(every:int, total:int) -> int:
    "How many times a run of `total` steps does what it does every `every` steps and at its last step (`after_step`)."
    return total // every + (total % every != 0)


def time_extras(tr:Trainer, work:Path) -> dict:
    "Seconds of each thing a default run does besides steps: validation loss, sample grid, loss-curve plot, checkpoint."
    cfg, log = tr.config, work / "log.csv"
    if not log.exists():  # a whole run's log, for the plot
        with start_log(log) as f:
            for s in range(1, cfg.max_steps + 1):
                f.write(log_line(dict(step=s, epoch=s / 2, loss=0.1 + 1 / s, val_loss=0.1 + 1 / s if s % cfg.val_every == 0 else None,
                                       lr=1e-3, images_per_s=80)))
    jobs = {"val_loss": tr.val_loss, "sample_grid": lambda: tr.sample_grid(cfg.val_prompts, work / "grid.png"),
            "loss_curve_plot": lambda: plot_loss_curve(log, work / "loss_curve.png"), "checkpoint": tr.checkpoint}
    seconds = {}
    for name, job in jobs.items():
        t0 = time.perf_counter(); job(); seconds[name] = time.perf_counter() - t0
    return seconds


def verdict(ratios:list) -> str:
    if min(ratios) >= 1.05: return "faster in every round"
    if max(ratios) <= 0.95: return "slower in every round"
    return "no clear change"


@call_parse
def main(rounds:int=4,        # Interleaved rounds
         steps:int=5,         # Timed steps per attempt per round
         warmup:int=1,        # Untimed steps per attempt per round, before its timed ones
         threads:int=2,       # CPU threads for torch (the tiny preset's default)
         attempts:str=None,   # Comma list of attempts (default: all)
         shapes_pool:int=128, # Shapes training images per trainer (set-up time only)
         out:str="bench/results/train_speedups", # Folder for JSON, the markdown table and the profile
         smoke:bool=False,    # 1 round of 1 + 2 steps: check that the script runs
):
    "Images/s of the default training step and of each attempt, interleaved; a profile of the step; the run's extras."
    if smoke: rounds, steps, warmup = 1, 2, 1
    names = list(ATTEMPTS) if attempts is None else ["default"] + [n for n in attempts.split(",") if n and n != "default"]
    unknown = [n for n in names if n not in ATTEMPTS]
    if unknown: raise SystemExit(f"Unknown attempts {unknown}; accepted: {', '.join(ATTEMPTS)}")
    names.sort(key=lambda n: n == "bf16")  # built last
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    load0, cpu = os.getloadavg(), machine_info()
    print(f"CPU: {cpu['cpu']} ({cpu['cores']} cores), torch {cpu['torch']}, {threads} threads; "
          f"AMX: {cpu['amx_bf16']}, AVX-512 BF16: {cpu['avx512_bf16']}; load average {load0[0]:.1f}", flush=True)

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        def make(**overrides):
            cfg = TrainConfig(**{**dict(shapes_pool=shapes_pool, num_threads=threads, probe_per_category=0, cache_dir=str(work / "cache"),
                                        output_dir=str(work / f"run{len(list(work.glob('run*')))}")), **overrides})
            return Trainer(cfg)
        built, skipped = {}, {}
        for n in names:
            t0 = time.perf_counter()
            try: built[n] = ATTEMPTS[n](make, threads)
            except Skip as e: skipped[n] = str(e); print(f"skipped {n}: {e}", flush=True); continue
            torch.set_num_threads(threads)
            print(f"built {n} ({time.perf_counter() - t0:.0f} s)", flush=True)
        base = built["default"]
        cfg = base.trainer.config
        batch = cfg.batch_size * cfg.grad_accum

        order, losses, first_call = list(built), {}, {}
        for n in order:  # the first step (compiling, lazy set-up), then a warm one: profiled for the default
            a = built[n]; a.enter()
            try:
                t0 = time.perf_counter(); losses[n] = run_steps(a, 1); first_call[n] = time.perf_counter() - t0
                if n == "default": losses[n].append(profile_step(a.trainer, out)); print((out / "profile.txt").read_text(), flush=True)
                else: losses[n] += run_steps(a, 1)
            finally: a.exit()
        per_round, extras = {n: [] for n in order}, []
        for r in range(rounds):
            turn = order[r % len(order):] + order[:r % len(order)]
            for n in turn:
                a = built[n]; a.enter()
                try:
                    losses[n] += run_steps(a, warmup)
                    t0 = time.perf_counter(); losses[n] += run_steps(a, steps); dt = time.perf_counter() - t0
                finally: a.exit()
                per_round[n].append(batch * steps / dt)
            extras.append(dict(step_s=batch / per_round["default"][-1], **time_extras(base.trainer, work)))
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {per_round[n][-1]:.1f}" for n in order) + " images/s", flush=True)
        for a in built.values(): a.trainer.release()

    ref = losses["default"]
    rows = []
    for n in order:
        ratios = [x / b for x, b in zip(per_round[n], per_round["default"])]
        diff = max(abs(x - y) for x, y in zip(losses[n], ref))
        row = dict(attempt=n, changes=built[n].changes, images_per_s=statistics.median(per_round[n]), per_round=per_round[n],
                   ratios=ratios, ratio=statistics.median(ratios), verdict="baseline" if n == "default" else verdict(ratios),
                   losses_identical=losses[n] == ref, max_loss_diff=diff, note=built[n].note, first_step_s=first_call[n], losses=losses[n])
        if n == "compile":
            row["compile_s"] = first_call[n] - first_call["default"]  # less the first step every trainer pays
            row["note"] += f" ({row['compile_s']:.0f} s)"
        rows.append(row)
    for n, why in skipped.items():
        rows.append(dict(attempt=n, skipped=why))

    total = cfg.max_steps
    counts = dict(val_loss=run_count(cfg.val_every, total), sample_grid=run_count(cfg.val_every, total),
                  loss_curve_plot=run_count(cfg.val_every, total), checkpoint=run_count(cfg.checkpoint_every, total))
    extra_rows = []
    for k, count in counts.items():
        in_steps = statistics.median(e[k] / e["step_s"] for e in extras)
        extra_rows.append(dict(what=k, seconds=statistics.median(e[k] for e in extras), in_steps=in_steps, per_run=count,
                               run_steps=count * in_steps))
    extra_steps = sum(e["run_steps"] for e in extra_rows)
    run = dict(max_steps=total, val_every=cfg.val_every, checkpoint_every=cfg.checkpoint_every, val_size=cfg.val_size,
               extra_steps=extra_steps, extras_share=extra_steps / (total + extra_steps), extras=extra_rows)

    cells = []
    for r in rows:
        if "skipped" in r: cells.append([f"`{r['attempt']}`", "", None, None, None, f"skipped: {r['skipped']}"]); continue
        same = "identical" if r["losses_identical"] else f"max diff {r['max_loss_diff']:.1e}"
        spread = f"{r['ratio']:.2f} ({min(r['ratios']):.2f}-{max(r['ratios']):.2f})"
        note = "; ".join(x for x in (r["verdict"], r["note"]) if x)
        cells.append([f"`{r['attempt']}`", r["changes"], r["images_per_s"], spread, same, note])
    table = [markdown_table(cells, ["attempt", "what it changes", "images/s", "vs default (median; min-max over rounds)",
                                    "losses vs default", "kept? / note"])]
    table += ["", f"Besides its {total:,} steps, a default run validates every {cfg.val_every} steps and checkpoints every "
              f"{cfg.checkpoint_every} (and at the last step); step = the default step's time in the same round:", "",
              markdown_table([[e["what"], e["seconds"], e["in_steps"], e["per_run"], f"{e['run_steps'] / (total + extra_steps):.1%}"]
                              for e in extra_rows] + [["all", "", "", "", f"{run['extras_share']:.1%}"]],
                             ["what", "seconds", "in default steps", "times per run", "run share"])]
    md = "\n".join(table) + "\n"
    result = dict(cpu=cpu, torch=cpu["torch"], threads=threads, interop_threads=torch.get_num_interop_threads(),
                  rounds=rounds, steps=steps, warmup=warmup, batch=batch, resolution=cfg.resolution, shapes_pool=shapes_pool,
                  load_avg=[load0[0], os.getloadavg()[0]], rows=rows, run=run, extras_per_round=extras)
    (out / "train_speedups.json").write_text(json.dumps(result, indent=1))
    (out / "train_speedups.md").write_text(md)
    print(md + f"JSON: {out / 'train_speedups.json'}")
