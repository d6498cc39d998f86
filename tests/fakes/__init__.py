"""Fakes of external services for tests: real servers on loopback, never mocks.

Import from the submodules, e.g. ``from tests.fakes.ollama import FakeOllama`` (this
package imports nothing itself so that ``python -m tests.fakes.ollama`` runs cleanly).
"""
