"""`tg.save(obj, path)` and `tg.load(path)`: tensors, NumPy arrays and nested dicts, lists and
tuples of them (a module's or an optimizer's state dict), with Python's None, bools, numbers
and strings, in one `.npz` file. Nothing is pickled and nothing executes on load.

The file is an ordinary NumPy `.npz` (a zip of `.npy` files), so `np.load(path)` opens it
(allow_pickle=False is enough):

    __tinygrad_rnn__    a 0-d str array: the JSON manifest (format tag, version and the
                        object's tree: containers, scalars, and for each tensor its dtype,
                        device, requires_grad and the name of its array)
    <where>             one array per tensor or NumPy array, named by where it sits in the
                        object: "fc.weight" in a state dict, "state/0/exp_avg" in an
                        optimizer's (a name that would not be a clean file name in the zip,
                        or would repeat one, falls back to "arr_<n>")

Writes are atomic (a temporary file in the same directory, fsync, os.replace): a crash
leaves the previous file at `path` intact. What comes back: tensors as tensors (on
`map_location`, by default the device they were saved from where it is available, else the
cpu; dtype and requires_grad kept, history not), NumPy arrays and scalars as NumPy, dict
(OrderedDict) as dict (OrderedDict), a tuple subclass (a named tuple) as a plain tuple, and
one object saved under two names (a tied weight) as one object again.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
import zipfile
from collections import OrderedDict

import numpy as np

from . import backend as B
from .errors import TinygradError
from .tensor import Tensor

__all__ = ["save", "load", "SerializationError"]

FORMAT = "tinygrad_rnn.save"
FORMAT_VERSION = 1
MANIFEST = "__tinygrad_rnn__"


class SerializationError(TinygradError, ValueError):
    """tg.save could not write an object or a file, or tg.load could not read one; the message
    names the file (or the place inside the object) and the reason."""


# ----------------------------------------------------------------------------- files
def atomic_write(path, write) -> None:
    """Call write(f) on a new temporary file in path's directory, fsync it, and move it over
    `path` with os.replace: a crash (or an error) at any point leaves what was at `path` untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + ".", dir=directory)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the result is an ordinary file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # the rename itself durable too; not every file system lets a directory be fsynced
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_npz(path, error, noun, foreign) -> dict:
    """{name: array} of every member of the .npz at `path` (a path or a readable file object),
    each read and CRC-checked now, without pickle. A missing, unreadable, foreign, truncated
    or corrupted file raises error(message): "{path}: no such {noun}", "{path}: {foreign} (...)",
    "{path}: the {noun} is truncated or corrupted (...)"."""
    if hasattr(path, "read"):
        raw, path = path.read(), getattr(path, "name", "<file object>")
    else:
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise error(f"{path}: no such {noun}") from None
        except OSError as e:
            raise error(f"{path}: cannot read it ({e.strerror or e})") from None
    if raw.startswith(b"PK") and not raw.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise error(f"{path}: the {noun} is truncated or corrupted (the zip header is cut short)")
    if not raw.startswith(b"PK"):
        why = ("the file is empty" if not raw else "a single .npy array: open it with np.load"
               if raw.startswith(b"\x93NUMPY") else "not an .npz archive")
        raise error(f"{path}: {foreign} ({why})")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise error(f"{path}: {foreign} (it holds Python objects that only pickle could read, "
                        f"and tinygrad_rnn never unpickles)") from None
        raise error(f"{path}: the {noun} is truncated or corrupted (ValueError: {e})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError, NotImplementedError) as e:
        raise error(f"{path}: the {noun} is truncated or corrupted ({type(e).__name__}: {e})") from None


def _write_npz(f, arrays):
    # np.savez's own layout, written here because np.savez takes the names as keyword
    # arguments, and a tensor named "file" or "allow_pickle" would collide with its own
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)


# ----------------------------------------------------------------------------- saving
_CLEAN = re.compile(r"[^\x00-\x1f\\/:*?\"<>|]+")  # one path component: no separators or controls


class _Writer:
    """Walks the object once: the manifest's tree, and the arrays it names."""

    def __init__(self):
        self.arrays = {}
        self.seen = {}      # id of a Tensor or ndarray already written -> its node (sharing kept)
        self.keep = []      # those objects, alive until the end, so no id is reused
        self.active = set()  # ids of the containers on the current path (a cycle is an error)

    def name_for(self, where):
        parts = [str(k) for k in where]
        name = "/".join(parts)
        ok = parts and all(_CLEAN.fullmatch(p) and p not in (".", "..") for p in parts)
        if not ok or name in self.arrays or name == MANIFEST or name.startswith("arr_"):
            name = f"arr_{len(self.arrays)}"
            while name in self.arrays:
                name += "_"
        return name

    def array(self, obj, host, where, node):
        if host.dtype.hasobject:
            raise SerializationError(f"save: {_show(where)} is a NumPy array of Python objects "
                                     f"(dtype {host.dtype}), which only pickle could store")
        node["array"] = name = self.name_for(where)
        self.arrays[name] = host
        self.seen[id(obj)] = node
        self.keep.append(obj)
        return node

    def node(self, obj, where):
        if isinstance(obj, np.generic):  # before float: np.float64 is a float, and would come back as one
            return self.seen.get(id(obj)) or self.array(obj, np.asarray(obj), where, {"type": "numpy_scalar"})
        if obj is None or isinstance(obj, (bool, str)):
            return {"type": type(obj).__name__, "value": obj}
        if isinstance(obj, int):
            return {"type": "int", "value": int(obj)}
        if isinstance(obj, float):
            return {"type": "float", "value": float(obj) if math.isfinite(obj) else repr(float(obj))}
        if id(obj) in self.seen:
            return self.seen[id(obj)]
        if isinstance(obj, Tensor):
            node = {"type": "Tensor", "dtype": obj.dtype.name, "device": obj.device.name,
                    "requires_grad": bool(obj.requires_grad)}
            return self.array(obj, obj.numpy(), where, node)
        if isinstance(obj, np.ndarray):
            return self.array(obj, obj, where, {"type": "ndarray"})
        if isinstance(obj, (dict, list, tuple)):
            if id(obj) in self.active:
                raise SerializationError(f"save: {_show(where)} contains itself (a reference cycle)")
            self.active.add(id(obj))
            try:
                return self.container(obj, where)
            finally:
                self.active.discard(id(obj))
        raise SerializationError(f"save: {_show(where)} is a {type(obj).__module__}.{type(obj).__qualname__}, "
                                 f"which tg.save does not store (it stores Tensors, NumPy arrays, dicts, "
                                 f"lists, tuples, None, bool, int, float and str)")

    def container(self, obj, where):
        if isinstance(obj, dict):
            keys, values = [], []
            for k, v in obj.items():
                if not (k is None or isinstance(k, (bool, int, float, str))):
                    raise SerializationError(f"save: {_show(where)} has a key of type {type(k).__name__} "
                                             f"({k!r}); dict keys must be str, int, float, bool or None")
                keys.append(self.node(k, where))
                values.append(self.node(v, where + (k,)))
            kind = "OrderedDict" if isinstance(obj, OrderedDict) else "dict"
            return {"type": kind, "keys": keys, "values": values}
        return {"type": "list" if isinstance(obj, list) else "tuple",
                "items": [self.node(v, where + (i,)) for i, v in enumerate(obj)]}


def _show(where):
    return "obj" + "".join(f"[{k!r}]" for k in where)


def save(obj, f) -> None:
    """Write obj (Tensors, NumPy arrays and scalars, None, bool, int, float, str, and dicts,
    lists and tuples of them, nested) to the file `f` (a path; or a writable binary file
    object, written directly), atomically, as an .npz that np.load opens without pickle.

    Raises SerializationError naming the place inside obj (obj['layer']['w']) of anything
    it cannot store, or the file and the reason when it cannot be written."""
    w = _Writer()
    tree = w.node(obj, ())
    manifest = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "root": tree})
    arrays = {MANIFEST: np.array(manifest), **w.arrays}
    if hasattr(f, "write"):
        _write_npz(f, arrays)
        return
    path = os.fspath(f)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SerializationError(f"save: cannot write {path}: the directory {directory} does not exist")
    if os.path.isdir(path):
        raise SerializationError(f"save: cannot write {path}: it is a directory")
    try:
        atomic_write(path, lambda fh: _write_npz(fh, arrays))
    except OSError as e:
        raise SerializationError(f"save: cannot write {path} ({e.strerror or e}); the previous file, "
                                 f"if any, is untouched") from None


# ----------------------------------------------------------------------------- loading
class _Reader:
    def __init__(self, path, arrays, map_location):
        self.path, self.arrays, self.map_location = path, arrays, map_location
        self.devices = {}  # saved device name -> the Device tensors go to
        self.made = {}     # array name -> the object made from it (sharing kept)

    def corrupt(self, why):
        return SerializationError(f"{self.path}: the file is corrupted (bad manifest: {why})")

    def device(self, saved):
        if saved not in self.devices:
            target = self.map_location
            if isinstance(target, dict):
                target = target.get(saved)
            if target is None:
                try:
                    dev = B.get_device(saved)
                except (RuntimeError, ValueError, ImportError):
                    dev = B.get_device("cpu")  # saved on a device this machine does not have
            else:
                dev = target
            self.devices[saved] = dev
        return self.devices[saved]

    def node(self, n):
        if not isinstance(n, dict) or "type" not in n:
            raise self.corrupt(f"a node {str(n)[:60]!r} without a type")
        kind = n["type"]
        if kind in ("NoneType", "bool", "str", "int"):
            return n["value"]
        if kind == "float":
            return float(n["value"])
        if kind in ("dict", "OrderedDict"):
            pairs = zip([self.node(k) for k in n["keys"]], [self.node(v) for v in n["values"]])
            return OrderedDict(pairs) if kind == "OrderedDict" else dict(pairs)
        if kind in ("list", "tuple"):
            items = [self.node(v) for v in n["items"]]
            return items if kind == "list" else tuple(items)
        if kind in ("Tensor", "ndarray", "numpy_scalar"):
            name = n["array"]
            if name not in self.made:
                self.made[name] = self.array(kind, name, n)
            return self.made[name]
        raise self.corrupt(f"an unknown node type {kind!r}")

    def array(self, kind, name, n):
        if name not in self.arrays:
            raise self.corrupt(f"the array {name!r} is missing")
        host = self.arrays[name]
        if kind == "ndarray":
            return host
        if kind == "numpy_scalar":
            return host[()]
        dtype = B.to_dtype(n["dtype"])
        if host.dtype != np.dtype(dtype.name):
            raise self.corrupt(f"the array {name!r} is {host.dtype}, its tensor {dtype.name}")
        dev = self.device(n["device"])
        t = Tensor._make(dev.from_host(host, dtype), dev, None, 0)
        if n.get("requires_grad"):
            t.requires_grad_(True)
        return t


def load(f, map_location=None):
    """The object that save wrote to `f` (a path, or a readable binary file object).

    Tensors come back on map_location: None (the device each was saved from, or the cpu
    where that device is not available here), a device ('cpu', 'cuda:0', a Device), or a
    dict {saved device name: device} (other devices as with None). dtype and requires_grad
    are kept. A missing, truncated, corrupted or foreign file raises SerializationError."""
    if isinstance(map_location, dict):  # a bad device name is the caller's error, not the file's
        map_location = {k: B.get_device(v) for k, v in map_location.items()}
    elif map_location is not None:
        if not isinstance(map_location, (str, B.Device)):
            raise TypeError(f"load: map_location must be None, a device name, a Device or a dict, "
                            f"got {type(map_location).__name__}")
        map_location = B.get_device(map_location)
    foreign = "not a file written by tg.save"
    arrays = read_npz(f, SerializationError, "file", foreign)
    path = getattr(f, "name", "<file object>") if hasattr(f, "read") else os.fspath(f)
    if MANIFEST not in arrays:
        hint = ("; it is a char-LM checkpoint: read it with tinygrad_rnn.lm.checkpoint.load"
                if "format" in arrays and arrays["format"].dtype.kind == "U" else "; np.load reads it")
        raise SerializationError(f"{path}: {foreign} (an .npz archive without the {MANIFEST} manifest{hint})")
    try:
        manifest = json.loads(str(arrays[MANIFEST][()]))
        fmt, version, root = manifest["format"], manifest["version"], manifest["root"]
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise SerializationError(f"{path}: the file is corrupted (bad manifest: {type(e).__name__}: {e})") from None
    if fmt != FORMAT:
        raise SerializationError(f"{path}: {foreign} (its manifest's format tag is {fmt!r})")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SerializationError(f"{path}: format version {version!r} is newer than this tinygrad_rnn reads "
                                 f"({FORMAT_VERSION}); upgrade tinygrad_rnn")
    reader = _Reader(path, {k: v for k, v in arrays.items() if k != MANIFEST}, map_location)
    try:
        return reader.node(root)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, SerializationError):
            raise
        raise reader.corrupt(f"{type(e).__name__}: {e}") from None
