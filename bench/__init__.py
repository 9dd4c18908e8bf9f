"""Benchmarks and the soak run (`make bench`, `make soak`); run as `python -m bench.<module>`
from the project root with `backend` on PYTHONPATH (the Makefile does both)."""
