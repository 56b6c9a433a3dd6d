"""Notebook-first text-to-image diffusion: train, sample and honestly evaluate text-conditioned diffusion models, from a CPU-sized Shapes world to Stable Diffusion 1.5"""

__version__ = "0.1.0"
