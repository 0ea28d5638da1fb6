"""SCALE / M5Product (Dong et al., CVPR 2022): five-modality product pre-training with
self-harmonised contrastive and masked-task weighting, any modality possibly missing.

Pure building blocks (no Ray): `loss` (modality graph, weighted pair NT-Xent, weighted masked
losses), `metrics` (retrieval mAP@k / Prec@k / HitRate@k), `data` (per-sample preprocessing, masking,
present mask), `model` (encoders, fusion, heads), `config`. The platform class is `method.SCALE`.
Spec: the method card `scale.md`.
"""
