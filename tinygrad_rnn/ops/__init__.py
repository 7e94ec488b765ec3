"""Every primitive differentiable op: one small `Function` each, grouped by kind.

Forward and backward work on raw arrays through `ctx.xp`, with names from the Python
Array API standard only; anything outside it goes through `ctx.device` (backend.py).
"""
from . import elementwise, linalg, nn, reduce, scan, shape  # noqa: F401
