"""Shared test helpers: throwaway PostgreSQL clusters and pytest fixtures."""
