# Experiment: bench/time_to_quality.py with an attention-grounding loss (TokenCompose-like) added in training.
# For single and relation scenes of the training pool, the cross-attention map of each object's colour, shape and size
# word (heads averaged, normalised over positions) should fall inside that object's box: loss = 1 - mass inside.
import os, runpy, sys, torch, torch.nn.functional as F
sys.path.insert(0, "bench")
import text2imagegen.train as T
from text2imagegen.data import ShapesWorld
from binding_attention import record_cross_attention, word_index
LAMBDA = float(os.environ.get("GROUND", "0.02"))
CELL = bool(int(os.environ.get("CELL", "0")))
print(f"grounding loss weight {LAMBDA}, cell term {CELL}")

def box_fraction(box, res, side):
    "(side*side,) fraction of each grid cell covered by pixel box."
    m = torch.zeros(res, res)
    x0, y0, x1, y1 = box
    m[int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))] = 1
    return F.adaptive_avg_pool2d(m[None, None], side).flatten()

orig_setup_data = T.Trainer.setup_data
def setup_data(self):
    orig_setup_data(self)
    cfg = self.config
    world = ShapesWorld(cfg.resolution, seed=cfg.seed, split="train", kind_weights=cfg.kind_weights, length=max(len(self.train_set), 1))
    L = self.captions.hidden.shape[1]
    tok = self.pipe.tokenizer
    self.ground = {s: torch.zeros(len(self.train_set), L, s * s) for s in (4, 8)}
    self.ground_has = torch.zeros(len(self.train_set), L, dtype=torch.bool)
    for i in range(len(self.train_set)):
        sc = world[i]
        if sc["clauses"]["kind"] == "count": continue
        assert sc["caption"] == self.train_set.captions[i][0]
        seen = {}
        for o in sc["boxes"]:
            for w in (o["colour"], o["shape"], o["size"]):
                j = word_index(tok, sc["caption"], w, seen.get(w, 0)); seen[w] = seen.get(w, 0) + 1
                if j is None or j >= L: continue
                for s in (4, 8): self.ground[s][i, j] = box_fraction(o["box"], cfg.resolution, s)
                self.ground_has[i, j] = True
    print(f"grounding targets: {int(self.ground_has.any(1).sum())} of {len(self.train_set)} images, {int(self.ground_has.sum())} words")
    self.attn_store = record_cross_attention(self.pipe.unet)
T.Trainer.setup_data = setup_data

def micro_batch_loss(self, k):
    cfg, acc = self.config, self.accelerator
    epoch, idx = T.batch_indices(k, len(self.train_set), cfg.batch_size, acc.num_processes, acc.process_index, cfg.seed)
    g = T.step_generator(cfg.seed, acc.process_index, k)
    ids = self.caption_ids(idx, epoch, g)
    hidden, pooled = self.captions.lookup(ids, self.device, self.dtype)
    x0 = self.model_inputs(idx, epoch)
    noise = torch.randn(x0.shape, generator=g).to(self.device)
    t = torch.multinomial(self.timestep_weights, len(idx), replacement=True, generator=g).to(self.device)
    self.attn_store.clear()
    with acc.autocast():
        loss = T.batch_loss(self.pipe, self.unet, self.scheduler, x0, hidden, pooled, noise, t, cfg.min_snr_gamma)
    has = self.ground_has[idx] & (ids != 0)[:, None]  # dropped captions have no words
    if not has.any() or not self.unet.training: return loss
    terms = []
    for probs in self.attn_store.values():  # (B, HW, L)
        side = int(probs.shape[1] ** 0.5)
        P = probs.transpose(1, 2)  # (B, L, HW)
        inside = (P / P.sum(-1, keepdim=True).clamp(min=1e-8) * self.ground[side][idx]).sum(-1)  # (B, L)
        terms.append((1 - inside)[has].mean())
        if CELL:  # inside an object's box, the attention should go to that object's words
            own = (self.ground[side][idx] > 0.5) & has[..., None]  # (B, L, HW)
            cells = own.any(1)  # (B, HW)
            if cells.any(): terms.append((1 - (P * own).sum(1))[cells].mean())
    g_loss = torch.stack(terms).mean()
    if k % 100 == 0: print(f'\nmicro-batch {k}: diffusion loss {float(loss):.4f}, grounding loss {float(g_loss):.3f}', flush=True)
    return loss + LAMBDA * g_loss
T.Trainer.micro_batch_loss = micro_batch_loss

sys.argv = ["bench/time_to_quality.py"] + sys.argv[1:]
runpy.run_path("bench/time_to_quality.py", run_name="__main__")
