"""tinygrad_rnn: a small autograd engine for recurrent networks, on NumPy or CuPy."""
from . import autograd
from ._version import __version__
from .autograd import Function, enable_grad, is_grad_enabled, no_grad
from .backend import (DType, bool_, cuda_available, float32, float64, get_default_device,
                      get_default_dtype, get_device, int32, int64, manual_seed, set_default_device,
                      set_default_dtype)
from .errors import AxisError, DTypeError, IndexOutOfRange, ShapeError, TinygradError
from .tensor import (Tensor, arange, cat, concat, eye, full, maximum, minimum, ones, ones_like, rand,
                     randint, randn, stack, tensor, where, zeros, zeros_like)
from . import tensor_xp  # noqa: F401  (registers create_graph's rules with the engine)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .serialization import SerializationError, load, save
from . import func, nn, viz  # noqa: E402
from . import optim  # noqa: E402

device = get_device

# PyTorch's module-level math: tg.exp(x) is x.exp(), tg.sum(x, dim=1) is x.sum(dim=1), ...
from .tensor import (as_tensor, bmm, einsum, from_numpy, inference_mode, linspace,  # noqa: E402
                     matmul, method_function as _method_function)

for _name in ("exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "square", "sin", "cos", "tanh", "sigmoid", "relu",
              "abs", "neg", "softplus", "clamp", "clip", "add", "sub", "mul", "div", "pow",
              "sum", "mean", "prod", "var", "std", "norm", "max", "min", "amax", "amin", "argmax", "argmin",
              "logsumexp", "cumsum", "logcumsumexp", "softmax", "log_softmax"):
    globals()[_name] = _method_function(_name)
del _name
