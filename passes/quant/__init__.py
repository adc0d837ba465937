"""Quantization passes: weight-only (weight.py) and full int8 (full.py, calibrate.py, ranges.py)."""
