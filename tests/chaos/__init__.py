"""Failure scenarios against the real running daemon (issue 8): `make chaos`."""
