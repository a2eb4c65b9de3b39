"""digits: handwritten-digit recognition experiments with Lightning and Hydra."""

__version__ = "0.1.0"
