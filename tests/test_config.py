import tomllib
from pathlib import Path

import pytest
import tomli_w

from fedcl.config import RunConfig
from fedcl.configure import (
    every_section,
    flower_run_config,
    from_flower_run_config,
    from_run_dir,
    from_toml,
    is_builtin_key,
    load_config,
    unread_keys,
)
from fedcl.errors import FedclError
from fedcl.scenarios.sections import StageShiftSettings
from fedcl.strategies.dbc import DBCSettings
from fedcl.strategies.lwf import LwFSettings

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_flower_config_is_generated_and_current():
    from fedcl.options import flower_config, with_flower_config

    text = (ROOT / "pyproject.toml").read_text()
    assert with_flower_config(text) == text, "run: python -m fedcl.options --pyproject"
    assert flower_config() in text
    flower_defaults = tomllib.loads(text)["tool"]["flwr"]["app"]["config"]
    every = RunConfig(sections=tuple(section() for section in every_section()))
    assert flower_defaults == flower_run_config(every)  # every built-in's keys, --run-config
    assert from_flower_run_config(flower_defaults) == (RunConfig(), False)
    resumed = flower_run_config(RunConfig(rounds=3), resume=True)
    assert from_flower_run_config(resumed) == (RunConfig(rounds=3), True)


def test_round_trip_through_kebab_case_mapping():
    config = RunConfig(clients=7, image_size=128, lr=0.01)
    assert RunConfig.from_mapping(config.to_mapping()) == config
    assert config.to_mapping()["image-size"] == 128


def test_toml_file_with_the_flag_names(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('clients = 4\nimage-size = 32\nstrategy = "fedavg"\nlr = 1\n')
    config = from_toml(path)
    assert (config.clients, config.image_size, config.lr) == (4, 32, 1.0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rounds": 0}, "'rounds' must be >= 1, got 0"),
        ({"clients": -2}, "'clients' must be >= 1, got -2"),
        ({"image-size": 60}, "'image-size' must be a multiple of 16"),
        ({"site-stain": 1.5}, "'site-stain' must be in 0..1"),
        ({"lr": 0}, "'lr' must be > 0"),
        ({"rounds": "ten"}, "'rounds' must be int, got 'ten'"),
        ({"optimizer": "adamw"}, "unknown optimizer 'adamw'.*Did you mean 'adam'"),
        ({"strategy": "dbc", "dbc-optimizer": "sgd"}, "unknown dbc-optimizer 'sgd'"),
        ({"dbc-tau": 2.0}, "key 'dbc-tau' belongs to strategy dbc, not to strategy 'fedavg'"),
        ({"scenario": "idd"}, "unknown scenario 'idd'.*Did you mean 'iid'"),
        ({"image_size": 64}, "unknown key 'image_size'.*Did you mean 'image-size'"),
    ],
)
def test_invalid_values_name_the_key_and_what_was_expected(values, message):
    with pytest.raises(FedclError, match=message):
        load_config(values, source="my.toml")


def test_unknown_keys_are_ignored_only_when_not_strict():
    config = RunConfig.from_mapping({"server-round": 3, "clients": 2}, strict=False)
    assert config.clients == 2


def test_missing_and_malformed_toml_files(tmp_path):
    with pytest.raises(FedclError, match="does not exist"):
        from_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("clients = = 3\n")
    with pytest.raises(FedclError, match="is not valid TOML"):
        from_toml(bad)


def test_default_run_directory_names_the_run():
    config = RunConfig(seed=4).with_run_dir()
    assert config.out.startswith("runs/fedavg-iid-s4-")
    assert RunConfig(out="x").with_run_dir().out == "x"


def test_a_run_recorded_before_a_key_existed_is_read_as_it_ran(tmp_path):
    from fedcl.configure import RECORDED_BEFORE

    old = load_config({"strategy": "dbc", "scenario": "catastrophic-forgetting"}).to_mapping()
    del old["stage-shift"], old["dbc-evidence-floor"]
    del old["dbc-teacher-term"], old["dbc-unbiased-loss"]
    (tmp_path / "config.toml").write_text(tomli_w.dumps(old))
    shift = from_run_dir(tmp_path).section(StageShiftSettings).stage_shift
    assert shift == "stain" == RECORDED_BEFORE["stage-shift"]
    dbc = from_run_dir(tmp_path).section(DBCSettings)
    assert (dbc.evidence_floor, dbc.teacher_term, dbc.unbiased_loss) == (0.0, "kl", False)
    user = from_toml(tmp_path / "config.toml")  # a user's file
    assert user.section(StageShiftSettings).stage_shift == "tissue"


def test_a_run_holds_its_own_keys_and_says_which_it_did_not_read():
    fedavg = load_config({})
    assert not {"dbc-tau", "lwf-weight", "proximal-mu", "drift-kind"} & set(fedavg.to_mapping())
    unread = unread_keys(fedavg)
    assert {"drift-ratio", "stages", "label-map", "reference-size", "root-tiles"} <= set(unread)
    lwf = load_config({"strategy": "lwf"})
    assert "site-stain" not in unread and "lwf-weight" in lwf.to_mapping()
    assert "lwf-weight" not in unread_keys(lwf)
    dbc = load_config({"strategy": "dbc", "scenario": "catastrophic-forgetting"})
    unread = unread_keys(dbc)
    assert "dbc-tau" not in unread and "stage-shift" not in unread
    assert "reference-size" not in unread and "root-tiles" in unread
    assert "forgetting-strength" in unread  # the tissue shift has no strength
    real = RunConfig(data="bcss:/x")  # the folder is checked when a run starts
    assert "site-stain" in unread_keys(real) and "label-map" not in unread_keys(real)


def test_config_toml_names_the_unread_keys_and_reloads_as_written(tmp_path):
    from fedcl.recorder import _toml

    config = load_config({"strategy": "fedprox", "proximal-mu": 0.1})
    path = tmp_path / "config.toml"
    path.write_bytes(_toml(config))
    text = path.read_text()
    assert text.startswith("# Keys this run did not read") and "stages" in text.split("\n\n")[0]
    assert from_toml(path) == config and "proximal-mu = 0.1" in text


@pytest.mark.parametrize(
    ("value", "rule", "ok"),
    [
        (1, ">= 1", True),
        (0, ">= 1", False),
        (0.0, "> 0", False),
        (float("nan"), "> 0", False),
        (1.0, "0..1", True),
        (1.0, "[0, 1)", False),
        (0.0, "[0, 1)", True),
    ],
)
def test_a_declared_rule_is_what_a_value_must_obey(value, rule, ok):
    from fedcl.config.keys import obeys

    assert obeys(value, rule) is ok


def test_every_key_is_declared_once_under_one_flat_name():
    from fedcl.config import keys

    names = [k.name for k in keys(*every_section())]
    every = RunConfig(sections=tuple(section() for section in every_section()))
    assert len(names) == len(set(names)) == len(every.to_mapping())
    dbc = load_config({"strategy": "dbc", "dbc-lambda": 0.5})
    assert dbc.section(DBCSettings).lambda_offdiag == 0.5
    assert dbc.with_keys({"dbc-tau": 2.0}).section(DBCSettings) == DBCSettings(
        tau=2.0, lambda_offdiag=0.5
    )
    lwf = load_config({"strategy": "lwf"}).with_keys({"lwf-weight": 0.5})
    assert lwf.section(LwFSettings).weight == 0.5
    with pytest.raises(FedclError, match="'dbc-tau' must be > 0, got 0"):
        load_config({"strategy": "dbc", "dbc-tau": 0}, source="x")
    with pytest.raises(FedclError, match="'lwf-temperature' must be > 0"):
        load_config({"strategy": "lwf", "lwf-temperature": 0.0})
    with pytest.raises(FedclError, match="keeps the run's strategy"):
        lwf.with_keys({"strategy": "dbc"})


def test_a_strategys_own_section_is_only_in_that_strategys_runs():
    tuned = {"strategy": "dbc", "dbc-tau": 9.0}
    assert load_config(tuned).section(DBCSettings) == DBCSettings(tau=9.0)
    # a shared file may hold another strategy's keys: tolerated, and not in the run
    fedavg = load_config(tuned | {"strategy": "fedavg"}, tolerate=is_builtin_key)
    assert fedavg == load_config({}) and fedavg.section(DBCSettings) == DBCSettings()


def test_the_committed_run_directories_still_load():
    found = sorted((ROOT / "docs" / "results").glob("**/config.toml"))
    assert found, "the committed result folders hold run configurations"
    for path in found:
        assert from_run_dir(path.parent).rounds >= 1, path


def test_sections_are_declared_as_section_classes_and_held_once():
    from fedcl.config import sections_of

    with pytest.raises(FedclError, match="holds each section once"):
        RunConfig(sections=(LwFSettings(), LwFSettings(weight=2.0)))

    class Wrong:
        sections = (dict,)

    with pytest.raises(FedclError, match=r"Wrong.sections must hold fedcl.config.Section"):
        sections_of(Wrong)
