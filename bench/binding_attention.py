"""Where does binding fail? Cross-attention of a Shapes model over relation scenes, teacher-forced.

    python bench/binding_attention.py runs/default              # 200 relation scenes, t = 900, 600, 300
    python bench/binding_attention.py runs/default --n 50 --timesteps 999,500

Renders relation scenes of the validation split ("a red circle to the left of a blue square": objects A and B with known
boxes), noises each at a few timesteps and runs the model's UNet once with the caption, recording every cross-attention
layer's attention. For the positions inside A's box it measures how much attention goes to A's colour word against
B's colour word (and likewise for B, and for the shape words). A share of 0.5 means the layer does not route a colour
word to its own object; 1.0 means it routes it perfectly. Also prints the attention mass that the two colour words get
at all, and the colour that the model's clean-image estimate gives each box (is it the object's own colour or the
other's?), so routing can be compared with what the model then draws.
"""
from __future__ import annotations
import json
from collections import defaultdict
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from diffusers.models.attention_processor import AttnProcessor
from fastcore.script import call_parse

from text2imagegen.data import PALETTE, ShapesWorld, pil_to_tensor
from text2imagegen.model import load_pipeline

from _common import table_header, table_row


class AttentionRecorder(AttnProcessor):
    "diffusers' plain attention processor that also keeps the last attention probabilities under `name` in `store`."
    def __init__(self, store:dict, name:str): super().__init__(); self.store, self.name = store, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        scores = attn.get_attention_scores
        def keep(query, key, attention_mask=None):
            probs = scores(query, key, attention_mask)
            self.store[self.name] = probs.unflatten(0, (-1, attn.heads)).mean(1)  # (B, queries, tokens), heads averaged
            return probs
        attn.get_attention_scores = keep
        try: return super().__call__(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        finally: del attn.get_attention_scores  # the instance attribute goes; the method is back


def record_cross_attention(unet) -> dict:
    "Give every attention of `unet` that reads the text (attn2; attn1 too without self-attention) a recorder; returns their store."
    store = {}
    for name, module in unet.named_modules():
        if getattr(module, "is_cross_attention", False): module.set_processor(AttentionRecorder(store, name))
    return store


def word_index(tokenizer, ids:list, word:str, occurrence:int=0) -> int|None:
    "Position of the `occurrence`-th token of `word` (a single word piece) in a caption's token `ids`, or None."
    word_ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(word_ids) != 1: return None
    hits = [i for i, t in enumerate(ids) if t == word_ids[0]]
    return hits[occurrence] if len(hits) > occurrence else None


def box_mask(box:tuple, h:int, w:int, resolution:int) -> torch.Tensor:
    "(h*w,) bool: the grid cells of an h x w attention map whose centres fall inside pixel box (x0, y0, x1, y1)."
    ys, xs = (torch.arange(h) + 0.5) * resolution / h, (torch.arange(w) + 0.5) * resolution / w
    inside = ((ys >= box[1]) & (ys <= box[3]))[:, None] & ((xs >= box[0]) & (xs <= box[2]))[None]
    return inside.flatten()


def mean_colour(image:torch.Tensor, box:tuple) -> torch.Tensor:
    "Mean RGB in [-1, 1] of `image` (3, H, W) inside the central half of pixel box (x0, y0, x1, y1)."
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 4, 1), max((y1 - y0) / 4, 1)
    return image[:, int(cy - hh):int(cy + hh) + 1, int(cx - hw):int(cx + hw) + 1].mean((1, 2))


def word_pairs(tokenizer, scene:dict) -> dict:
    "{'colour'|'shape': (token of A's word, token of B's word)} for the words that differ between a relation scene's objects."
    (a, b), ids = scene["clauses"]["objects"], tokenizer(scene["caption"]).input_ids
    pairs = {k: (word_index(tokenizer, ids, a[k]), word_index(tokenizer, ids, b[k]))
             for k in ("colour", "shape") if a[k] != b[k]}
    return {k: v for k, v in pairs.items() if None not in v}


def own_shares(probs:torch.Tensor, # one scene's attention (queries, tokens) at one layer
               pairs:dict,         # from `word_pairs`
               boxes:list,         # A's and B's pixel boxes
               resolution:int,     # image side in pixels
              ) -> list:
    "[(word kind, own word's share, attention on both words)] inside each object's box."
    side, out = int(probs.shape[0] ** 0.5), []
    for kind, (ia, ib) in pairs.items():
        for box, mine, theirs in ((boxes[0], ia, ib), (boxes[1], ib, ia)):
            m = box_mask(box, side, side, resolution)
            if not m.any(): continue
            own, other = probs[m, mine].mean(), probs[m, theirs].mean()
            out.append((kind, float(own / (own + other)), float(own + other)))
    return out


PALETTE_RGB = {name: torch.tensor(rgb, dtype=torch.float) / 127.5 - 1 for name, rgb in PALETTE.items()}  # in [-1, 1]


@call_parse
def main(run:str,                    # Run folder written by `t2i-train` (or a saved pipeline folder)
         n:int=200,                  # Relation scenes (validation split) to measure
         timesteps:str="900,600,300", # Noise levels to run the UNet at (comma-separated training timesteps)
         batch:int=50,               # Scenes per UNet call
         seed:int=0,                 # Seeds the scenes and the noise
         threads:int=2,              # CPU threads for torch
         out:str="",                 # JSON file for the results (default: <run>/binding_attention.json)
        ):
    "Routing of colour and shape words to their own object in every cross-attention layer of a Shapes model."
    torch.set_num_threads(threads)
    pipe = load_pipeline(run)
    res = pipe.default_size[0]
    world = ShapesWorld(res, seed=seed, split="val", kinds=("relation",))
    scenes = [s for s in (world[i] for i in range(4 * n)) if s["clauses"]["objects"][0]["colour"] != s["clauses"]["objects"][1]["colour"]][:n]
    store = record_cross_attention(pipe.unet)
    tok, sched = pipe.tokenizer, DDPMScheduler.from_config(pipe.scheduler.config)  # the training noise
    share = defaultdict(lambda: defaultdict(list))  # (t, layer) -> word kind -> per-scene own-word share
    mass = defaultdict(list)                          # (t, layer) -> attention mass on the two colour words
    drawn = defaultdict(list)                         # t -> per-object: is the x0 estimate nearer own colour than other's
    pairs = [word_pairs(tok, s) for s in scenes]  # token positions, once per scene
    g = torch.Generator().manual_seed(seed)
    for start in range(0, len(scenes), batch):
        chunk = scenes[start:start + batch]
        images = torch.stack([pil_to_tensor(s["image"]) for s in chunk])
        x0 = pipe.to_model_space(images)
        hidden, pooled = pipe.encode_prompt([s["caption"] for s in chunk])
        noise = torch.randn(x0.shape, generator=g)
        for t in map(int, timesteps.split(",")):
            tt = torch.full((len(chunk),), t)
            x_t = sched.add_noise(x0, noise, tt)
            with torch.no_grad(): pred = pipe.predict(x_t, tt, hidden, pooled)
            est_images = pipe.from_model_space(sched.step(pred, t, x_t).pred_original_sample)  # the clean-image estimate
            for j, s in enumerate(chunk):
                (oa, ob), boxes = s["clauses"]["objects"], [b["box"] for b in s["boxes"]]
                for own, other, box in ((oa, ob, boxes[0]), (ob, oa, boxes[1])):
                    c = mean_colour(est_images[j], box)
                    drawn[t].append(float((c - PALETTE_RGB[own["colour"]]).norm() < (c - PALETTE_RGB[other["colour"]]).norm()))
                for layer, probs in store.items():
                    for kind, own_share, both in own_shares(probs[j], pairs[start + j], boxes, res):
                        share[(t, layer)][kind].append(own_share)
                        if kind == "colour": mass[(t, layer)].append(both)
    rows = []
    print(f"{len(scenes)} relation scenes (validation split), teacher-forced at timesteps {timesteps}.")
    print(table_header(["timestep", "layer", "own colour word's share (A, B boxes)", "own shape word's share", "attention on the two colour words"]))
    for (t, layer), kinds in share.items():
        r = {"timestep": t, "layer": layer, **{f"{k}_share": sum(v) / len(v) for k, v in kinds.items()},
             "colour_mass": sum(mass[(t, layer)]) / len(mass[(t, layer)])}
        rows.append(r)
        print(table_row([t, layer, r.get("colour_share"), r.get("shape_share"), r["colour_mass"]]))
    for t, v in drawn.items(): print(f"timestep {t}: the clean-image estimate's colour in an object's box is nearer its own colour than the other object's in {sum(v) / len(v):.2f} of {len(v)} boxes")
    path = Path(out) if out else Path(run) / "binding_attention.json"
    path.write_text(json.dumps({"scenes": len(scenes), "rows": rows,
                                "estimate_own_colour": {t: sum(v) / len(v) for t, v in drawn.items()}}, indent=1))
    print(f"Saved {path}")
