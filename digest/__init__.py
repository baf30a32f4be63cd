"""digest: personal email digests of new machine-learning papers, grouped by topic."""

__version__ = "0.1.0"
__all__ = ["__version__"]
