"""Character-level language models: the model, its training loop, sampling, checkpoints,
and a count-based n-gram baseline. The text they learn from (vocabularies, corpora,
truncated-BPTT batches) comes from `tinygrad_rnn.text`, the package beside this one:
lm imports text, never the other way round."""
from .checkpoint import CheckpointError  # noqa: F401
from .model import CELLS, CharLM, available_cells  # noqa: F401
from .ngram import NGramModel  # noqa: F401
from .sample import next_distribution, sample_next  # noqa: F401
from .train import TrainConfig, TrainError, TrainResult, evaluate, load_model, train  # noqa: F401
