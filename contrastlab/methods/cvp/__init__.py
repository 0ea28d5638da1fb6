"""Cross-View-Prediction (CVP): self-supervised hyperspectral features + SVM (card cvp.md)."""
