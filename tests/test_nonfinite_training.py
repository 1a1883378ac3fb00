"""Training stops at the first non-finite loss or gradient, in one line naming the stage and the
step: the callback on its own, and wired through the Axolotl plugin every stage YAML names (an SFT
stage and the ORPO stage, each from a tiny model with a NaN weight)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import yaml

from maerak.files import atomic_write_jsonl
from maerak.profiles import ROOT, Profile
from tests.conftest import write_stage_configs
from tests.test_nonfinite import nan_copy
from tests.test_training import _tiny_stage2
from training import axolotl_run as ar
from training.nonfinite import NonFiniteStop, NonFiniteTrainingError

PLUGIN = "training.nonfinite.NonFiniteStopPlugin"
STATE = SimpleNamespace(global_step=6)


def test_every_stage_yaml_names_the_plugin():
    for path in sorted((ROOT / "axolotl_configs").glob("*/stage*.yml")):
        assert PLUGIN in (yaml.safe_load(path.read_text(encoding="utf-8")).get("plugins") or []), path


@pytest.mark.parametrize("key,value", [("loss", math.nan), ("grad_norm", math.inf), ("nll_loss", -math.inf)])
def test_a_non_finite_logged_number_stops_training_naming_stage_and_step(key, value, capsys):
    cb = NonFiniteStop("stage2")
    cb.on_log(None, STATE, None, logs={"loss": 1.0, "grad_norm": 0.5, "learning_rate": 1e-5})  # finite: goes on
    with pytest.raises(NonFiniteTrainingError, match=f"^stage2: step 6: {key} is {value}; training stopped$"):
        cb.on_log(None, STATE, None, logs={"loss": 1.0, "grad_norm": 0.5, key: value})
    assert capsys.readouterr().out == f"error: stage2: step 6: {key} is {value}; training stopped\n"


def test_a_non_finite_gradient_stops_training_before_the_optimizer_step():
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    cb = NonFiniteStop("stage3")
    cb.on_pre_optimizer_step(None, STATE, None, model=model)  # finite: goes on
    model.weight.grad[0, 0] = math.nan
    with pytest.raises(NonFiniteTrainingError, match="^stage3: step 7: non-finite gradient"):
        cb.on_pre_optimizer_step(None, STATE, None, model=model)


def test_the_logging_filter_that_hides_a_nan_loss_is_turned_off():
    args = SimpleNamespace(logging_nan_inf_filter=True)
    NonFiniteStop("stage1").on_train_begin(args, STATE, None)
    assert args.logging_nan_inf_filter is False


def test_an_sft_stage_from_a_nan_weight_stops_at_step_1_in_one_line(tmp_path, tiny_model_dir, sample_dir):
    from maerak.prompt import alpaca_row
    from maerak.schema import load_items

    nan_copy(tiny_model_dir, tmp_path / "model")
    profile = Profile(name="tiny", settings={"axolotl_configs": "axolotl_configs/tiny", "offline": True}, root=tmp_path)
    write_stage_configs(profile, {**_tiny_stage2(), "plugins": [PLUGIN]}, None, base_model="model")
    items, _ = load_items(sample_dir / "train.json", require_labels=True)
    atomic_write_jsonl(profile.prepared / "stage1.jsonl", [alpaca_row(it) for it in items[:4]])
    with pytest.raises(ar.TrainError) as exc:
        ar.train(profile, 1)
    message = str(exc.value)
    assert len(message.splitlines()) == 1
    assert "NonFiniteTrainingError: stage1: step 1: non-finite gradient" in message


def test_the_orpo_stage_from_a_nan_weight_stops_at_step_1_in_one_line(tmp_path, tiny_model_dir, sample_dir):
    from maerak.modes import LETTERS_MODE
    from maerak.schema import load_items

    profile = Profile(name="tiny", root=tmp_path, settings={"axolotl_configs": "axolotl_configs/tiny", "offline": True,
                                                             "preference": True})
    stage3 = yaml.safe_load((ROOT / "axolotl_configs" / "sample" / "stage3_orpo.yml").read_text(encoding="utf-8"))
    write_stage_configs(profile, {**_tiny_stage2()}, {**_tiny_stage2()}, base_model="model",
                        stage3={**stage3, "max_steps": 2, "sequence_len": 2048})
    nan_copy(tiny_model_dir, profile.stage2_dir)
    items, _ = load_items(sample_dir / "train.json", require_labels=True)
    atomic_write_jsonl(profile.stage_data(3), [r.row for r in LETTERS_MODE.preference_rows(items[:2])])
    with pytest.raises(ar.TrainError) as exc:
        ar.train(profile, 3)
    message = str(exc.value)
    assert len(message.splitlines()) == 1
    assert "NonFiniteTrainingError: stage3: step 1: non-finite gradient" in message
