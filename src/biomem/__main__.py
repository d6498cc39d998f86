"""``python -m biomem``."""

from __future__ import annotations

from biomem.cli import main

main()
