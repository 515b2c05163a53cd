"""Deterministic benchmark data generators (TPC-H, IMDb-like, FineWiki-like) into DuckDB files."""
