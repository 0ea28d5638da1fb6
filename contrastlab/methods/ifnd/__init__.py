"""IFND: Incremental False Negative Detection (Chen et al., ICLR 2022). Pure building blocks.

loss.py (queue and in-batch losses with elimination/attraction), clustering.py (hierarchical
spherical k-means pseudo-labels, confidence, acceptance, schedule, FN precision, digest),
model.py (encoders, momentum encoder, key queue), augment.py (small-scale two-view recipe).
"""
