"""The kernels' C++ lives in real files shipped with the package (tinygrad_rnn/kernels/*.h,
*.cuh, *.cpp.in; ops/rnn.cpp), not in Python strings: the build compiles those files (its
errors name them), its cache follows their content, and a non-editable install carries and
builds them. (test_structure.py holds the layers and that no Python file holds C++.)"""
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from tinygrad_rnn import kernels
from tinygrad_rnn.ops import rnn as rnnops

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tinygrad_rnn"
CXX = kernels.cpu.find_compiler()
needs_cxx = pytest.mark.skipif(CXX is None, reason="no host C++ compiler to build the kernels with")


# ----------------------------------------------------------------------------- where the C++ is
def test_the_sources_are_files_of_the_package():
    for f in (kernels.cpu.RUNTIME, kernels.cpu.GLUE, kernels.cuda.PRELUDE, rnnops.HOST.source):
        assert f.is_file(), f
    assert rnnops.HOST.source.name == "rnn.cpp" and rnnops.HOST.source.parent == PACKAGE / "ops"
    assert "tg_pgemm" in kernels.cpu.RUNTIME.read_text() and "seq_fwd" in rnnops.HOST.source.read_text()


def test_a_cuda_device_gets_cupys_kernels_with_the_prelude_file(monkeypatch):
    # no GPU needed: CuPy stood in for by a recorder of what each ElementwiseKernel is made from
    made = []

    class FakeCupy:
        @staticmethod
        def ElementwiseKernel(in_params, out_params, body, name, preamble=""):
            made.append((in_params, out_params, body, name, preamble))
            return name

    class FakeCuda:
        kind, use_kernels = "cuda", True
    monkeypatch.setitem(sys.modules, "cupy", FakeCupy)
    dev = FakeCuda()
    try:
        ks = kernels.for_device(dev, "rnn", rnnops.KERNELS, preamble="// extra\n", host=rnnops.HOST)
        assert kernels.for_device(dev, "rnn", rnnops.KERNELS, host=rnnops.HOST) is ks  # built once
    finally:
        kernels._built.pop(dev, None)
    assert ks == {name: f"tinygrad_rnn_rnn_{name}" for name in rnnops.KERNELS}  # no host loops on CUDA
    prelude = (PACKAGE / "kernels" / "cuda_prelude.cuh").read_text()
    for (ins, outs, body, name, pre), (key, k) in zip(made, rnnops.KERNELS.items()):
        assert (ins, outs, name, pre) == (k.in_params, k.out_params, f"tinygrad_rnn_rnn_{key}", prelude + "// extra\n")
        assert body == kernels.cuda_body(k) and body.endswith(k.body)
        assert body.startswith("const ptrdiff_t b = i / H, j = i % H;") == (k.row == "H")


# ----------------------------------------------------------------------------- building from the files
def _sos(d):
    return sorted(p.name for p in d.iterdir() if p.suffix == ".so")


@needs_cxx
def test_editing_the_host_code_rebuilds_and_moving_it_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_RNN_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "a" / "rnn.cpp"
    src.parent.mkdir()
    shutil.copy(rnnops.HOST.source, src)
    host = kernels.HostCode(src, rnnops.HOST.functions)
    assert kernels.cpu.build("rnn", rnnops.KERNELS, host=host) is not None
    first = _sos(tmp_path / "cache")
    moved = tmp_path / "b" / "rnn.cpp"  # the same files elsewhere (another install): the same library
    moved.parent.mkdir()
    shutil.copy(src, moved)
    assert kernels.cpu.build("rnn", rnnops.KERNELS, host=kernels.HostCode(str(moved), host.functions)) is not None
    assert _sos(tmp_path / "cache") == first
    src.write_text(src.read_text() + "\n// edited\n")
    assert kernels.cpu.build("rnn", rnnops.KERNELS, host=host) is not None
    assert len(_sos(tmp_path / "cache")) == 2


@needs_cxx
def test_compiler_errors_name_the_real_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_RNN_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.cpp"
    bad.write_text("template <typename T>\nstatic int f(int n) {\n  return n + not_declared;\n}\n")
    host = kernels.HostCode(bad, {"f": "int n"})
    with pytest.warns(kernels.KernelBuildWarning, match=re.escape(str(bad)) + r":3:\d+: error: .*not_declared"):
        assert kernels.cpu.build("broken", rnnops.KERNELS, host=host) is None


# ----------------------------------------------------------------------------- installed
@pytest.mark.slow
@needs_cxx
def test_a_non_editable_install_builds_and_uses_the_kernels(tmp_path):
    missing = [m for m in ("setuptools", "wheel") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"building the package needs {', '.join(missing)} (in the test extra)")
    src, site, cache, elsewhere = (tmp_path / d for d in ("src", "site", "cache", "elsewhere"))
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "dist",
                                                            ".hypothesis", ".pytest_cache", "*.so"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.rmtree(src)  # nothing may come from the copy the package was built from
    elsewhere.mkdir()
    code = textwrap.dedent("""
        import os, sys, warnings
        import tinygrad_rnn as tg
        from tinygrad_rnn.kernels import KernelBuildWarning, cpu
        from tinygrad_rnn.ops import rnn
        warnings.simplefilter("error", KernelBuildWarning)  # a failed build fails here, saying why
        site = os.path.realpath(sys.argv[1])
        assert os.path.realpath(tg.__file__).startswith(site + os.sep), tg.__file__
        assert os.path.realpath(str(rnn.HOST.source)).startswith(site + os.sep), rnn.HOST.source
        ran = []
        call = cpu.HostFunction.__call__
        def spy(self, *args):
            ran.append(self.name)
            return call(self, *args)
        cpu.HostFunction.__call__ = spy
        for layer in (tg.nn.LSTM, tg.nn.GRU):
            m = layer(3, 5, num_layers=2)
            out, _ = m(tg.randn(4, 2, 3))
            (out * out).sum().backward()
            assert all(p.grad is not None for p in m.parameters())
        ks = rnn.device_kernels(tg.get_device("cpu"))
        assert ks is not None and {"lstm_fwd", "gru_bwd", "seq_fwd", "seq_bwd"} <= set(ks), ks
        assert {"rnn.seq_fwd", "rnn.seq_bwd"} <= set(ran), ran
        print(" ".join(sorted(f for f in os.listdir(os.environ["TINYGRAD_RNN_CACHE"]) if f.endswith(".so"))))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CXX")}
    env.update(PYTHONPATH=str(site), TINYGRAD_RNN_CACHE=str(cache), TINYGRAD_RNN_CPU_KERNELS="1")
    r = subprocess.run([sys.executable, "-c", code, str(site)], cwd=elsewhere, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert any(name.startswith("rnn-") for name in r.stdout.split()), r.stdout
