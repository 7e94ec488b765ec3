"""Tools for testing ops built on tinygrad_rnn: hypothesis strategies and helpers.

    from tinygrad_rnn.testing import strategies as tgst

This package imports hypothesis (a test extra: ``pip install -e ".[test]"``); the rest
of tinygrad_rnn never imports it, so the engine runs without it.
"""
from . import strategies  # noqa: F401
from .strategies import far_from, well_separated  # noqa: F401
