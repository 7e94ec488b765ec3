"""Reverse-mode autodiff.

engine.py is the heart, in one file that imports no op: `Function` (an op: forward and
backward on raw arrays), `Context` (a graph node), grad mode, and `run_backward`, the
iterative walk. tools.py: `grad`, tensor hooks, `detect_anomaly`.
"""
from .engine import (AnomalyError, Context, CreateGraphError, Function, TensorBase, _topological_order,  # noqa: F401
                     enable_grad, is_grad_enabled, no_grad, retain, run_backward, unbroadcast)
from .tools import RemovableHandle, detect_anomaly, grad, is_anomaly_enabled, register_hook  # noqa: F401
