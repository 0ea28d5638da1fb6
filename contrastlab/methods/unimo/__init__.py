"""UNIMO (Li et al., ACL 2021): unified Transformer with cross-modal contrastive learning (CMCL).

Offline mining of positives/negatives lives with its dataset:
`contrastlab.platform.datasets.shapes_relations.mine_and_rewrite(in_shards, out_dir)`.
"""
