"""Shared test helpers: the emulator and worker processes, settings, draining, reading profiles.

Nothing here is a test; no test module imports another test module (tests/unit/test_layout.py).
"""
