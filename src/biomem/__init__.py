"""biomem: a biological memory pipeline with a production reliability layer."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
