"""quantsweep: what post-training quantization does to a transformer model."""

__version__ = "0.1.0"
