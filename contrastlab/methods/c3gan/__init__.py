"""C3-GAN: Contrastive fine-grained class clustering via GANs (Kim & Ha, ICLR 2022).

method.py (C3GAN, the platform method: two optimisers, evaluation, grids); the pure pieces:

model.py (Generator, Discriminator, D/G step loss helpers), loss.py (all loss terms, code
sampling), warp.py (affine warp of the foreground), evaluation.py (official ACC/NMI, cluster
usage), augment.py (the two real-image views, numpy in / numpy out).
"""
