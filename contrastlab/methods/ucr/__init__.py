"""UCR: unsupervised lifelong person re-id via contrastive rehearsal (see method.py, card methods/ucr.md)."""
