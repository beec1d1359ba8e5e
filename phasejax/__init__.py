"""phasejax: contrast-phase identification of abdominal CT in JAX/Flax."""

__version__ = "0.1.0"
