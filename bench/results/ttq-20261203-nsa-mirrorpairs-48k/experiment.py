# Experiment: bench/time_to_quality.py where every batch holds 16 training images and their 16 mirror images, each
# mirror with its direction words exchanged ("to the left of" <-> "to the right of", "above" <-> "below", "on the left"
# <-> "on the right", "at the top" <-> "at the bottom"): a relation drawn both ways round, side by side in one batch,
# so that the only difference between the two captions is the direction the model ignores (tenth session).
# Flipped along the axis the caption names (horizontal when it names none); same timestep for an image and its mirror.
import re, runpy, sys, torch
import text2imagegen.train as T

from text2imagegen.data import POSITION_PHRASES as PP, RELATION_PHRASES as RP
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
            "left": "right", "right": "left", "top": "bottom", "bottom": "top"}
SWAP = {(RP | PP)[k]: (RP | PP)[v] for k, v in OPPOSITE.items()}  # the world's own phrases, exchanged
PATTERN = re.compile("|".join(sorted(map(re.escape, SWAP), key=len, reverse=True)))
VERTICAL = (RP["above"], RP["below"], PP["top"], PP["bottom"])

def mirror(caption:str) -> tuple:
    "(mirrored caption, flip dim): dim 2 (vertical) when the caption names a vertical direction, else 3 (horizontal)."
    found = PATTERN.findall(caption)
    return PATTERN.sub(lambda m: SWAP[m.group(0)], caption), (2 if any(f in VERTICAL for f in found) else 3)

orig_setup_data = T.Trainer.setup_data
def setup_data(self):
    orig_setup_data(self)  # whitening is fitted by now, so this cache is whitened like the main one
    self.mirror_captions = T.CaptionCache(self.pipe, [mirror(c)[0] for cs in self.train_set.captions for c in cs])
    print(f"mirror captions: {len(self.mirror_captions)} ('{self.train_set.captions[0][0]}' -> '{mirror(self.train_set.captions[0][0])[0]}')")
T.Trainer.setup_data = setup_data

def micro_batch_loss(self, k):
    cfg, acc = self.config, self.accelerator
    epoch, idx = T.batch_indices(k, len(self.train_set), cfg.batch_size, acc.num_processes, acc.process_index, cfg.seed)
    idx = idx[: len(idx) // 2]
    g = T.step_generator(cfg.seed, acc.process_index, k)
    ids = self.caption_ids(idx, epoch, g)  # the trainer's own caption choice and dropout
    mirrored = [mirror(self.captions.captions[i]) for i in ids.tolist()]
    h1, p1 = self.captions.lookup(ids, self.device, self.dtype)
    h2, p2 = self.mirror_captions.lookup(self.mirror_captions.ids([m for m, _ in mirrored]), self.device, self.dtype)
    x0 = self.model_inputs(idx, epoch)
    images = self.pipe.from_model_space(x0)
    flipped = torch.stack([im.flip(d - 1) for im, (_, d) in zip(images, mirrored)])  # per image (C, H, W): dims 1 / 2
    x0 = torch.cat([x0, self.pipe.to_model_space(flipped)])
    hidden = torch.cat([h1, h2]); pooled = None if p1 is None else torch.cat([p1, p2])
    noise = torch.randn(x0.shape, generator=g).to(self.device)
    t = torch.multinomial(self.timestep_weights, len(idx), replacement=True, generator=g).to(self.device).repeat(2)
    with acc.autocast():
        return T.batch_loss(self.pipe, self.unet, self.scheduler, x0, hidden, pooled, noise, t, cfg.min_snr_gamma)
T.Trainer.micro_batch_loss = micro_batch_loss

sys.argv = ["bench/time_to_quality.py"] + sys.argv[1:]
runpy.run_path("bench/time_to_quality.py", run_name="__main__")
