"""`export` to a path it cannot write ends in the one-line error every bad input gets."""
import os

import pytest

from tinygrad_rnn.cli import main
from tinygrad_rnn.lm import TrainConfig, train
from tinygrad_rnn.lm.export import ExportError, export_safetensors

pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    p = d / "t.txt"
    p.write_text("the cat sat on the mat. " * 30, encoding="utf-8")
    cfg = TrainConfig(data=str(p), hidden=8, seq_len=16, batch=4, steps=2, eval_every=1000)
    train(cfg, str(d / "run"), progress="none", echo=lambda *a, **k: None, final_sample_length=0)
    return str(d / "run")


def _one_line_error(capsys, argv, match):
    assert main(argv) == 1
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in cap.err, cap.err
    assert "tinygrad_rnn export: error: " in lines[0] or "tinygrad-rnn export: error: " in lines[0]
    assert match in lines[0], lines[0]


def test_export_into_a_missing_directory(run_dir, capsys, tmp_path):
    out = str(tmp_path / "no" / "such" / "dir" / "m.safetensors")
    _one_line_error(capsys, ["export", run_dir, out], f"the directory {os.path.dirname(out)} does not exist")
    assert not os.path.exists(os.path.dirname(out))
    if not os.path.exists("/no"):  # the issue's own example
        _one_line_error(capsys, ["export", run_dir, "/no/such/dir/m.safetensors"],
                        "/no/such/dir/m.safetensors: the directory /no/such/dir does not exist")


def test_export_with_a_bad_extension(run_dir, capsys, tmp_path):
    _one_line_error(capsys, ["export", run_dir, str(tmp_path / "m.npz")], "must end in .safetensors")


def test_export_onto_a_directory(run_dir, capsys, tmp_path):
    d = tmp_path / "x.safetensors"
    d.mkdir()
    _one_line_error(capsys, ["export", run_dir, str(d)], "is a directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a directory this user cannot write")
def test_export_into_a_read_only_directory(run_dir, capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _one_line_error(capsys, ["export", run_dir, str(ro / "m.safetensors")], "is not writable")
    finally:
        ro.chmod(0o700)


def test_a_failed_write_is_an_export_error_and_leaves_no_file(run_dir, tmp_path, monkeypatch):
    import safetensors.numpy as stn

    def broken(tensors, path, metadata=None):
        open(path, "wb").close()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stn, "save_file", broken)
    out = tmp_path / "m.safetensors"
    with pytest.raises(ExportError, match=r"m.safetensors: cannot write it \(OSError: .*No space left"):
        export_safetensors(run_dir, out)
    assert os.listdir(tmp_path) == []


def test_export_still_writes(run_dir, capsys, tmp_path):
    assert main(["export", run_dir, str(tmp_path / "m.safetensors")]) == 0
    assert (tmp_path / "m.safetensors").exists() and "wrote" in capsys.readouterr().out
