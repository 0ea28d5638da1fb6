"""DeCLIP (Li et al., ICLR 2022): CLIP plus SimSiam, MLM, multi-view and nearest-neighbour supervision.

Pure building blocks (no Ray): `loss` (loss terms, weights, theta clamp), `nn_queue` (the per-rank
NN text queue), `mlm` (token masking, numpy), `eda` (caption augmentation, numpy), `heads`
(projector, predictor, MLM head). Spec: the method card `declip.md`.
"""
