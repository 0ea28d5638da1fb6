"""FAME: foreground-background merging on top of MoCo for motion-aware video representations."""
