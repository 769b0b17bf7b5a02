"""Thin Faust agents; the worker registers them (app/worker.py)."""
