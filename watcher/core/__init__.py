"""The functional core: pure, deterministic, free of I/O, clocks and globals.

Nothing in this package imports from the shell (`watcher.*` outside `core`);
`tests/test_layering.py` enforces it.
"""
