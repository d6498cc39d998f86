"""``python -m tests.fakes``: run the fake Ollama server (options as ``tests.fakes.ollama``)."""

from __future__ import annotations

from tests.fakes.ollama import main

if __name__ == "__main__":
    raise SystemExit(main())
