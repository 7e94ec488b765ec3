"""`python -m tinygrad_rnn`: the command line (see tinygrad_rnn/cli.py)."""
import sys

from .cli import main

sys.exit(main())
