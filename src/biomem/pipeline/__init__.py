"""The memory pipeline's stages."""

from __future__ import annotations
