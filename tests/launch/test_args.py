"""Bad arguments get a clear message (exit 2) before any rank starts; presets and the report's verdict."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from nzdist.experiments.config import KNOBS, PRESETS, ConfigError, load_preset, preset_path
from nzdist.launch import compare, main

from launchutil import PY, run


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nproc", "0"], "--nproc must be at least 1, got 0"),
        (["--nproc", "-3"], "--nproc must be at least 1, got -3"),
        (["--preset", "huge_tpu"], "unknown preset 'huge_tpu': expected one of tiny_cpu, gpu_1b"),
        (["--preset", "missing.json"], "preset file 'missing.json' does not exist"),
        (["--steps", "0"], "steps must be an integer >= 1, got 0"),
        (["--d-model", "130"], "d_model must be a multiple of n_head=4"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
    ],
)
def test_main_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_preset_without_gpu_is_refused(capsys):
    with pytest.raises(SystemExit):
        main.main(["--preset", "gpu_1b"])
    assert "sees no GPU" in capsys.readouterr().err


def test_command_line_error_is_a_clean_message():
    r = run([PY, "-m", "nzdist.launch.main", "--nproc", "0"], timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "nzdist train: error: --nproc must be at least 1" in r.stderr


def _write(tmp_path, preset: dict):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(preset))
    return str(path)


def test_preset_files_must_document_every_knob(tmp_path):
    raw = json.load(open(preset_path("tiny_cpu")))
    undocumented = copy.deepcopy(raw)
    del undocumented["knobs"]["lr"]
    with pytest.raises(ConfigError, match=r"\['lr'\] have no entry in its \"knobs\" doc dict"):
        load_preset(_write(tmp_path, undocumented))
    unknown = copy.deepcopy(raw)
    unknown["learning_rate"] = 1.0
    with pytest.raises(ConfigError, match=r"unknown knob\(s\) \['learning_rate'\]"):
        load_preset(_write(tmp_path, unknown))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_preset(str(tmp_path / "bad.json"))
    lossy = dict(raw, codec="lossy")
    with pytest.raises(ConfigError, match="codec must be 'lossless'"):
        load_preset(_write(tmp_path, lossy))


def test_presets_load_and_have_the_sizes_they_claim():
    from nzdist.experiments.models import GPT, ModelConfig

    def params(p):
        with torch.device("meta"):
            return sum(
                t.numel()
                for t in GPT(
                    ModelConfig(d_model=p.d_model, n_layer=p.n_layer, n_head=p.n_head, seq_len=p.seq_len)
                ).parameters()
            )

    for name in PRESETS:
        p = load_preset(name)
        assert p.name == name and set(p.as_dict()) == {"name", *KNOBS}
    tiny, big = load_preset("tiny_cpu"), load_preset("gpu_1b")
    assert tiny.device == "cpu" and params(tiny) < 1e6
    assert big.device == "cuda" and 0.9e9 < params(big) < 1.2e9  # "1B-class"
    assert load_preset("tiny_cpu", {"steps": 7, "batch": None}).steps == 7


def test_worker_outside_a_launcher_says_how_to_start_it(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="start it under torchrun"):
        compare.main(["--steps", "1"])


def test_presets_ship_inside_the_package_and_configs_is_that_folder():
    # Package data (a wheel install reads them from site-packages); the checkout's configs/ is a link to the same
    # folder, so the JSON that users copy and the JSON the package reads cannot drift apart.
    import os

    import nzdist
    from nzdist.experiments.config import CONFIG_DIR, default_deepspeed_config

    package = os.path.dirname(os.path.abspath(nzdist.__file__))
    assert os.path.realpath(CONFIG_DIR) == os.path.join(os.path.realpath(package), "configs")
    for name in PRESETS:
        assert os.path.isfile(preset_path(name)) and preset_path(name).startswith(CONFIG_DIR)
    assert os.path.samefile(default_deepspeed_config(), os.path.join(CONFIG_DIR, "neuzip_zero.json"))
    checkout_configs = os.path.join(os.path.dirname(package), "configs")
    if os.path.exists(checkout_configs):
        assert os.path.samefile(checkout_configs, CONFIG_DIR)
