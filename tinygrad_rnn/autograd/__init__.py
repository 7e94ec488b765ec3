"""Reverse-mode autodiff.

engine.py is the heart, in one file that imports nothing above it: `Function` (an op:
forward and backward on raw arrays), `Context` (a graph node), and `run_backward`, the
iterative walk. tools.py: grad mode, `grad`, tensor hooks, retain_grad, `detect_anomaly`.
"""
from ..errors import AnomalyError, CreateGraphError  # noqa: F401
from .engine import Context, Function, TensorBase, _topological_order, run_backward, unbroadcast  # noqa: F401
from .tools import (RemovableHandle, detect_anomaly, enable_grad, grad, is_anomaly_enabled,  # noqa: F401
                    is_grad_enabled, no_grad, register_hook, retain)
