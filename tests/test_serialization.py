"""tg.save / tg.load: round trips of tensors (dtypes, devices, requires_grad), NumPy values and
nested containers, state dicts of modules and optimizers, a file that np.load opens without
pickle, atomic writes, and an error naming the file or the place in the object for every
way a save or a load can fail."""
import io
import json
import math
import os
from collections import OrderedDict, namedtuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import serialization as S

DTYPES = [tg.float32, tg.float64, tg.int64, tg.bool_]


def _values(dtype):
    if dtype is tg.bool_:
        return np.array([[True, False, True], [False, False, True]])
    if dtype is tg.int64:
        return np.array([[1, -2, 3], [2 ** 40, 0, -7]], dtype=np.int64)
    return np.array([[0.1, -2.5, 3e-8], [1e30, 0.0, -7.25]], dtype=dtype.name)


def _same(a, b):
    """Nested equality that tells a tuple from a list, 1 from 1.0 and True, and NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tg.Tensor):
        return (a.dtype is b.dtype and a.device is b.device and a.requires_grad == b.requires_grad
                and np.array_equal(a.numpy(), b.numpy()))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _roundtrip(obj, **kw):
    buf = io.BytesIO()
    tg.save(obj, buf)
    buf.seek(0)
    return tg.load(buf, **kw)


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_tensor_round_trip_keeps_dtype_device_values(device, dtype, tmp_path):
    t = tg.tensor(_values(dtype), dtype=dtype, device=device)
    tg.save(t, tmp_path / "t.npz")
    back = tg.load(tmp_path / "t.npz")
    assert isinstance(back, tg.Tensor) and back is not t
    assert back.dtype is dtype and back.device is tg.device(device) and not back.requires_grad
    np.testing.assert_array_equal(back.numpy(), _values(dtype))
    assert back.numpy().dtype == _values(dtype).dtype


def test_requires_grad_kept_history_and_grad_dropped(device):
    w = tg.randn(2, 3, dtype=tg.float64, device=device, requires_grad=True)
    h = w * 2  # not a leaf
    (h.sum()).backward()
    back = _roundtrip({"w": w, "h": h, "d": w.detach()})
    for k in ("w", "h"):
        assert back[k].requires_grad and back[k].is_leaf and back[k].grad is None
    assert not back["d"].requires_grad
    np.testing.assert_array_equal(back["h"].numpy(), 2 * w.numpy())
    back["h"].sum().backward()  # a leaf of a new graph
    np.testing.assert_array_equal(back["h"].grad.numpy(), np.ones((2, 3)))


def test_nested_python_values_round_trip():
    Pair = namedtuple("Pair", "a b")
    obj = OrderedDict([
        ("none", None), ("flags", [True, False]), ("ints", (0, -3, 10 ** 30)),
        ("floats", [1.5, -0.0, 1e-310, float("inf"), float("-inf"), float("nan")]),
        ("text", "ünïcödé \n \"quoted\""), ("empty", [{}, [], ()]),
        (3, "int key"), (2.5, "float key"), (None, "None key"), (False, "bool key"),
        ("deep", {"a": [{"b": ({"c": [None]},)}]}),
    ])
    back = _roundtrip(obj)
    assert _same(back, obj) and type(back) is OrderedDict
    assert type(_roundtrip({"x": 1})) is dict
    assert math.copysign(1.0, back["floats"][1]) == -1.0
    assert _roundtrip(Pair(1, 2)) == (1, 2) and type(_roundtrip(Pair(1, 2))) is tuple


def test_numpy_values_stay_numpy():
    obj = {"f16": np.arange(6, dtype=np.float16).reshape(2, 3), "u8": np.array([0, 255], np.uint8),
           "c": np.array([1 + 2j]), "empty": np.zeros((0, 4)), "scalar": np.float32(2.5), "i": np.int64(-4), "f64": np.float64(0.1),
           "b": np.bool_(True), "s": np.array(["ab", "c"]), "0d": np.array(3.0)}
    back = _roundtrip(obj)
    arrays = [k for k, v in obj.items() if isinstance(v, np.ndarray)]
    assert list(back) == list(obj) and _same({k: back[k] for k in arrays}, {k: obj[k] for k in arrays})
    for k in ("scalar", "i", "b", "f64"):
        assert type(back[k]) is type(obj[k]) and back[k] == obj[k]


def test_one_object_under_two_names_comes_back_as_one(device):
    w = tg.randn(3, dtype=tg.float64, device=device, requires_grad=True)
    a = np.arange(3)
    back = _roundtrip({"enc": w, "dec": w, "list": [a, a]})
    assert back["enc"] is back["dec"] and back["list"][0] is back["list"][1]


def test_map_location(tmp_path):
    tg.save({"s": tg.ones(2, device="strict"), "c": tg.ones(2)}, tmp_path / "m.npz")
    back = tg.load(tmp_path / "m.npz", map_location="cpu")
    assert back["s"].device is tg.device("cpu") and back["c"].device is tg.device("cpu")
    back = tg.load(tmp_path / "m.npz", map_location=tg.device("strict"))
    assert back["s"].device is tg.device("strict") and back["c"].device is tg.device("strict")
    back = tg.load(tmp_path / "m.npz", map_location={"strict": "cpu"})
    assert back["s"].device is tg.device("cpu") and back["c"].device is tg.device("cpu")
    back = tg.load(tmp_path / "m.npz", map_location={"cpu": "strict"})
    assert back["s"].device is tg.device("strict") and back["c"].device is tg.device("strict")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        tg.load(tmp_path / "m.npz", map_location="tpu")
    with pytest.raises(TypeError, match="map_location must be None, a device name, a Device or a dict, got int"):
        tg.load(tmp_path / "m.npz", map_location=3)


def _edit_manifest(path, edit):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    m = json.loads(str(arrays[S.MANIFEST][()]))
    edit(m, arrays)
    arrays[S.MANIFEST] = np.array(json.dumps(m))
    with open(path, "wb") as f:
        S._write_npz(f, arrays)


def test_a_device_missing_here_falls_back_to_cpu(tmp_path):
    p = tmp_path / "gpu.npz"
    tg.save({"w": tg.ones(2)}, p)

    def on_gpu(m, arrays):
        m["root"]["values"][0]["device"] = "cuda:7"
    _edit_manifest(p, on_gpu)
    assert tg.load(p)["w"].device is tg.device("cpu")
    assert tg.load(p, map_location={"cuda:7": "strict"})["w"].device is tg.device("strict")


def test_module_state_dict_round_trip_and_load_state_dict(tmp_path):
    tg.manual_seed(1)
    a = tg.nn.Sequential(tg.nn.Linear(4, 5), tg.nn.LSTM(5, 3, num_layers=2))
    tg.manual_seed(2)
    b = tg.nn.Sequential(tg.nn.Linear(4, 5), tg.nn.LSTM(5, 3, num_layers=2))
    tg.save(a.state_dict(), tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:  # a NumPy user reads it by name
        np.testing.assert_array_equal(z["1.weight_ih_l1"], a.state_dict()["1.weight_ih_l1"])
    b.load_state_dict(tg.load(tmp_path / "model.npz"))
    x = tg.randn(6, 2, 4)
    out_a, _ = a(x)
    out_b, _ = b(x)
    np.testing.assert_array_equal(out_a.numpy(), out_b.numpy())


def test_optimizer_state_dict_round_trip_resumes_exactly(tmp_path):
    def setup(seed):
        tg.manual_seed(seed)
        m = tg.nn.Linear(3, 2)
        return m, tg.optim.Adam(m.parameters(), lr=0.05, betas=(0.8, 0.9), amsgrad=True)

    def step(m, opt):
        opt.zero_grad()
        (m(tg.ones(4, 3)) ** 2).sum().backward()
        opt.step()

    m, opt = setup(0)
    for _ in range(3):
        step(m, opt)
    tg.save({"model": m.state_dict(), "optim": opt.state_dict(), "epoch": 3}, tmp_path / "ck.npz")
    ck = tg.load(tmp_path / "ck.npz")
    assert ck["epoch"] == 3 and ck["optim"]["param_groups"][0]["betas"] == (0.8, 0.9)
    assert list(ck["optim"]["state"]) == [0, 1]  # int keys stay ints
    m2, opt2 = setup(5)
    m2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["optim"])
    step(m, opt)
    step(m2, opt2)
    for p, q in zip(m.parameters(), m2.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_np_load_opens_it_without_pickle(tmp_path):
    obj = {"fc.weight": tg.ones(2, 2), "file": np.arange(3), "allow_pickle": np.zeros(1),
           "nested": {"0": [tg.zeros(1)]}, "a/b": np.ones(1), "": np.ones(2), "arr_0": np.ones(3)}
    tg.save(obj, tmp_path / "x.npz")
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        files = set(z.files)
        assert {"fc.weight", "file", "allow_pickle", "nested/0/0", S.MANIFEST} <= files
        manifest = json.loads(str(z[S.MANIFEST][()]))
        assert manifest["format"] == "tinygrad_rnn.save" and manifest["version"] == 1
    assert len(files) == len(obj) + 1  # the names that are not clean file names got arr_<n>
    assert _same(tg.load(tmp_path / "x.npz"), obj)


# ----------------------------------------------------------------------------- a property
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                  st.text(max_size=5),
                  st.builds(lambda s, d: tg.tensor(np.arange(s, dtype=np.float64) - 1.5, dtype=d),
                            st.integers(0, 4), st.sampled_from([tg.float32, tg.float64])),
                  st.builds(lambda s: np.arange(s).reshape(-1, 1), st.integers(0, 4)))
_keys = st.one_of(st.text(max_size=4), st.integers(-3, 3))
_tree = st.recursive(_leaf, lambda kids: st.one_of(st.lists(kids, max_size=3), st.tuples(kids, kids),
                                                   st.dictionaries(_keys, kids, max_size=3)), max_leaves=8)


@given(_tree)
def test_any_nested_structure_round_trips(obj):
    assert _same(_roundtrip(obj), obj)


# ----------------------------------------------------------------------------- atomic writes
def test_a_crash_in_os_replace_leaves_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "state.npz"
    tg.save({"v": 1}, p)
    before = p.read_bytes()

    def crash(src, dst):
        raise KeyboardInterrupt  # the process dies between writing and renaming
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        tg.save({"v": 2, "w": tg.ones(100)}, p)
    assert p.read_bytes() == before and tg.load(p) == {"v": 1}
    assert os.listdir(tmp_path) == ["state.npz"]  # the temporary file is gone too


def test_a_crash_while_writing_leaves_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "state.npz"
    tg.save({"v": 1}, p)
    real = S._write_npz

    def half(f, arrays):
        real(f, arrays)
        f.truncate(f.tell() // 2)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(S, "_write_npz", half)
    with pytest.raises(S.SerializationError, match=r"cannot write .*state.npz \(No space left on device\); "
                                                   r"the previous file, if any, is untouched"):
        tg.save({"v": 2}, p)
    assert tg.load(p) == {"v": 1} and os.listdir(tmp_path) == ["state.npz"]


def test_saved_file_is_an_ordinary_file(tmp_path):
    tg.save([1], tmp_path / "f.npz")
    mode = os.stat(tmp_path / "f.npz").st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


# ----------------------------------------------------------------------------- errors
def test_unsupported_objects_name_their_place():
    class Thing:
        pass
    with pytest.raises(tg.SerializationError, match=r"save: obj\['layer'\]\['w'\] is a .*Thing, which tg.save "
                                                    r"does not store"):
        tg.save({"layer": {"w": Thing()}}, io.BytesIO())
    with pytest.raises(S.SerializationError, match=r"obj\[1\]\[0\] is a builtins.set"):
        tg.save([1, ({1},)], io.BytesIO())
    with pytest.raises(S.SerializationError, match=r"obj\['k'\] has a key of type tuple \(\(1, 2\)\)"):
        tg.save({"k": {(1, 2): 3}}, io.BytesIO())
    with pytest.raises(S.SerializationError, match=r"obj\[0\] is a NumPy array of Python objects"):
        tg.save([np.array([{}], dtype=object)], io.BytesIO())
    loop = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(S.SerializationError, match=r"obj\['a'\]\[0\] contains itself"):
        tg.save(loop, io.BytesIO())
    assert isinstance(S.SerializationError("x"), tg.TinygradError)


def test_truncated_file(tmp_path):
    p = tmp_path / "t.npz"
    tg.save({"w": tg.ones(50, 50), "b": [1, 2]}, p)
    raw = p.read_bytes()
    for cut in (len(raw) - 10, len(raw) // 2, 100, 3):
        p.write_bytes(raw[:cut])
        with pytest.raises(tg.SerializationError, match=r"t.npz: the file is truncated or corrupted \("):
            tg.load(p)


def test_corrupted_member(tmp_path):
    p = tmp_path / "c.npz"
    tg.save({"w": tg.ones(50, 50)}, p)
    raw = bytearray(p.read_bytes())
    i = raw.index(b"\x93NUMPY", raw.index(b"w.npy")) + 300  # inside the tensor's data
    raw[i:i + 8] = b"\xff" * 8
    p.write_bytes(bytes(raw))
    with pytest.raises(tg.SerializationError, match="truncated or corrupted"):
        tg.load(p)


@pytest.mark.parametrize("make,match", [
    (lambda p: np.savez(p, a=np.ones(2)), r"not a file written by tg.save \(an .npz archive without the "
                                         r"__tinygrad_rnn__ manifest; np.load reads it\)"),
    (lambda p: p.write_text("hello\n"), r"not a file written by tg.save \(not an .npz archive\)"),
    (lambda p: p.write_bytes(b""), r"not a file written by tg.save \(the file is empty\)"),
    (lambda p: np.save(p, np.ones(2)), r"a single .npy array: open it with np.load"),
    (lambda p: np.savez(p, a=np.array([{}], dtype=object)), "Python objects that only pickle could read"),
    (lambda p: np.savez(p, format=np.array("tinygrad_rnn.charlm")), "a char-LM checkpoint"),
])
def test_foreign_files(tmp_path, make, match):
    p = tmp_path / "f.npz"
    make(p)
    if not p.exists():  # np.save added .npy
        os.replace(str(p) + ".npy", p)
    with pytest.raises(tg.SerializationError, match=match):
        tg.load(p)


@pytest.mark.parametrize("edit,match", [
    (lambda m, a: m.update(format="other.tool"), r"format tag is 'other.tool'"),
    (lambda m, a: m.update(version=99), r"format version 99 is newer than this tinygrad_rnn reads \(1\)"),
    (lambda m, a: a.pop("w"), r"the file is corrupted \(bad manifest: the array 'w' is missing\)"),
    (lambda m, a: m["root"].update(type="frozenset"), r"unknown node type 'frozenset'"),
    (lambda m, a: m["root"]["values"][0].update(dtype="int64"), r"the array 'w' is float32, its tensor int64"),
    (lambda m, a: m.pop("root"), r"the file is corrupted \(bad manifest: KeyError"),
])
def test_corrupted_manifest(tmp_path, edit, match):
    p = tmp_path / "m.npz"
    tg.save({"w": tg.ones(2)}, p)
    _edit_manifest(p, edit)
    with pytest.raises(tg.SerializationError, match=match):
        tg.load(p)


def test_manifest_that_is_not_json(tmp_path):
    p = tmp_path / "j.npz"
    with open(p, "wb") as f:
        S._write_npz(f, {S.MANIFEST: np.array("{not json")})
    with pytest.raises(tg.SerializationError, match=r"j.npz: the file is corrupted \(bad manifest: JSONDecodeError"):
        tg.load(p)


def test_missing_file_and_directories(tmp_path):
    with pytest.raises(tg.SerializationError, match=r"none.npz: no such file"):
        tg.load(tmp_path / "none.npz")
    with pytest.raises(tg.SerializationError, match=r"cannot read it \(Is a directory\)"):
        tg.load(tmp_path)
    with pytest.raises(tg.SerializationError, match=r"save: cannot write .*x.npz: the directory .*nodir does not exist"):
        tg.save(1, tmp_path / "nodir" / "x.npz")
    with pytest.raises(tg.SerializationError, match=r"save: cannot write .*: it is a directory"):
        tg.save(1, tmp_path)


def test_unwritable_directory(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(S.tempfile, "mkstemp", refuse)
    with pytest.raises(tg.SerializationError, match=r"save: cannot write .*x.npz \(Permission denied\)"):
        tg.save(1, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(tg.SerializationError, match=r"cannot write .*\(Permission denied\)"):
            tg.save(1, d / "x.npz")
    finally:
        d.chmod(0o700)
