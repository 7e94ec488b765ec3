"""Run by tests/test_distributed.py under `mpiexec -n 2`: the train command, with rank 1
made to fail at step 3 (as a crash or a bad disk would), to see the job end, not hang."""
import sys

from tinygrad_rnn import distributed as dist
import importlib

T = importlib.import_module("tinygrad_rnn.lm.train")  # the module (tinygrad_rnn.lm.train is also a function)

real_step = T.Run.step


def failing_step(self):
    if dist.rank() == 1 and self.step_count == 2:
        raise RuntimeError("rank 1 breaks at step 3 on purpose")
    return real_step(self)


T.Run.step = failing_step
from tinygrad_rnn.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
