"""Notebook-first text-to-image diffusion: train, sample and honestly evaluate text-conditioned diffusion models, from a CPU-sized Shapes world to Stable Diffusion 1.5

Modules:

- `text2imagegen.train`: Train a text-conditioned diffusion model with `accelerate`: cached text embeddings and latents, caption dropout for classifier-free guidance, min-SNR weighting, EMA, validation, atomic checkpoints and exact resume."""

__version__ = "0.1.0"
