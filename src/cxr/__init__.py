"""cxr: multi-label chest X-ray classification pipeline (NIH ChestX-ray14)."""

__version__ = "0.1.0"
