"""Neural-network building blocks: modules, layers, recurrent cells and layers, losses, init."""
from . import functional  # noqa: F401
from .module import Module, ModuleList, Parameter, Sequential, StateDictError  # noqa: F401
from .minrnn import MinGRU, MinLSTM  # noqa: F401,E402
