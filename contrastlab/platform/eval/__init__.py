"""Evaluation metrics shared by the methods: pure functions of numpy arrays or torch tensors.

Every function accepts numpy arrays or torch tensors (any device; feature metrics compute on
the features' device in float32) and returns python floats, numpy arrays or dicts of them.

- clustering: `clustering_accuracy` (Hungarian), `nmi`, `ari`
- frozen features: `knn_accuracy` / `knn_predict` (weighted kNN), `linear_probe`
- image-text: `zero_shot_accuracy`, `zero_shot_topk`, `average_prompt_embeddings`, `retrieval_recall`
- re-id: `reid_evaluate` (Market-1501 mAP / CMC)
- segmentation: `segmentation_confusion`, `miou`, `cam_to_mask`, `sweep_background_threshold`
- hyperspectral: `hsi_scores` (OA, AA, kappa)
- TensorBoard: `export_embeddings`
- distributed: `extract_features` (run a model over every Train worker's part of a split, gathered in index order)
"""
from ._arrays import check_finite
from .clustering import ari, clustering_accuracy, contingency_table, nmi
from .embeddings import export_embeddings
from .features import extract_features
from .hsi import hsi_scores
from .knn import knn_accuracy, knn_predict
from .probe import DEFAULT_C_GRID, linear_probe
from .reid import reid_evaluate
from .retrieval import retrieval_recall
from .segmentation import DEFAULT_BG_THRESHOLDS, cam_to_mask, miou, segmentation_confusion, sweep_background_threshold
from .zeroshot import average_prompt_embeddings, zero_shot_accuracy, zero_shot_topk

__all__ = [
    "DEFAULT_BG_THRESHOLDS",
    "DEFAULT_C_GRID",
    "ari",
    "average_prompt_embeddings",
    "cam_to_mask",
    "check_finite",
    "clustering_accuracy",
    "contingency_table",
    "export_embeddings",
    "extract_features",
    "hsi_scores",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "miou",
    "nmi",
    "reid_evaluate",
    "retrieval_recall",
    "segmentation_confusion",
    "sweep_background_threshold",
    "zero_shot_accuracy",
    "zero_shot_topk",
]
