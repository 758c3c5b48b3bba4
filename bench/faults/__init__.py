"""Load and fault scenarios against a real zeroserve, with figures: see run.py."""
