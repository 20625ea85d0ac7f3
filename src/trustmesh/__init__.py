"""trustmesh: a self-serve data mesh platform for trusted data sharing."""

__version__ = "0.1.0"
