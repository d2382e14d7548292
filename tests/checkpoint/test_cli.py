"""`nzdist ckpt inspect` and `nzdist ckpt convert --dense` (to DCP and to safetensors)."""

import io
import warnings

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file

import nzdist.checkpoint as ckpt
from nzdist.cli import ckpt as cli

from ckpt_testutil import assert_bit_equal, step, tiny_training_state


def _saved(tmp_path):
    model, opt = tiny_training_state()
    ckpt.save({"model": model.state_dict(), "optim": opt.state_dict()}, tmp_path / "a")
    step(model, opt, 1)
    ckpt.save({"model": model.state_dict(), "optim": opt.state_dict()}, tmp_path / "b", previous=tmp_path / "a")
    return model, opt


def test_inspect_reports_sizes_kinds_and_chain(tmp_path, capsys):
    _saved(tmp_path)
    out = io.StringIO()
    totals = cli.inspect(str(tmp_path / "b"), verify=True, out=out)
    text = out.getvalue()
    assert "chain depth 1" in text and str(tmp_path / "a") in text
    for word in ("model.0.weight", "exp_avg_sq", "TOTAL", "verified"):
        assert word in text
    assert 0 < totals["stored"] < totals["dense"]
    assert cli.main(["inspect", str(tmp_path / "a")]) == 0


def test_inspect_verify_names_a_corrupt_file(tmp_path, capsys):
    _saved(tmp_path)
    data = tmp_path / "a" / "__0_0.nzd"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 1
    data.write_bytes(raw)
    assert cli.main(["inspect", str(tmp_path / "b"), "--verify"]) == 1  # b's chain reads a
    assert "__0_0.nzd" in capsys.readouterr().err


def test_convert_dense_to_dcp_and_safetensors(tmp_path):
    model, opt = _saved(tmp_path)
    assert cli.main(["convert", str(tmp_path / "b"), str(tmp_path / "dense"), "--dense"]) == 0
    sd = {"model": {k: torch.zeros_like(v) for k, v in model.state_dict().items()}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(sd, storage_reader=dcp.FileSystemReader(tmp_path / "dense"))  # plain torch DCP reads it
    assert_bit_equal(sd["model"], model.state_dict())
    st = tmp_path / "b.safetensors"
    assert cli.main(["convert", str(tmp_path / "b"), str(st), "--dense"]) == 0
    flat = load_file(st)
    assert_bit_equal({k[len("model.") :]: v for k, v in flat.items() if k.startswith("model.")}, model.state_dict())
    assert torch.equal(flat["optim.state.0.exp_avg_sq"], opt.state_dict()["state"][0]["exp_avg_sq"])
    assert cli.main(["convert", str(tmp_path / "b"), str(st), "--dense"]) == 2  # refuses to overwrite
