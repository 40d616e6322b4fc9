"""The performance benchmark: `python -m bench` (or `./dev bench`) writes docs/performance.md."""
