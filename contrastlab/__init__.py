"""contrastlab: a Ray-based experiment platform for contrastive representation learning."""

__version__ = "0.1.0"
