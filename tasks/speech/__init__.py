"""Shared code of the speech tasks (`vad`, `antispoof`): synthesis, noise, mixing, spoofing
attacks, front ends, models, real-corpus loaders, metrics and the on-disk data cache."""
