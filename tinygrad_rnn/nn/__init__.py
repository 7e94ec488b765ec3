"""Neural-network building blocks: modules, layers, recurrent cells and layers, losses, init."""
from . import functional  # noqa: F401
from .module import Module, ModuleList, Parameter, Sequential, StateDictError  # noqa: F401
from . import init, utils  # noqa: F401,E402
from .layers import Dropout, Embedding, Identity, Linear, ReLU, Sigmoid, Tanh  # noqa: F401,E402
from .minrnn import MinGRU, MinLSTM  # noqa: F401,E402
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell  # noqa: F401,E402
from .regularization import LockedDropout, embedding_dropout, locked_dropout  # noqa: F401,E402
from .lnlstm import LayerNormLSTM  # noqa: F401,E402
from .attention import AdditiveAttention  # noqa: F401,E402
from .layers import Flatten, LayerNorm  # noqa: F401,E402
from .activation import ELU, GELU, LeakyReLU, LogSoftmax, SiLU, Softmax  # noqa: F401,E402
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss, L1Loss,  # noqa: F401,E402
                   MSELoss, NLLLoss, SmoothL1Loss)
