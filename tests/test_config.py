import tomllib
from pathlib import Path

import pytest
import tomli_w

from fedcl.config import RunConfig
from fedcl.errors import FedclError

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_flower_config_is_generated_and_current():
    from fedcl.options import flower_config, with_flower_config

    text = (ROOT / "pyproject.toml").read_text()
    assert with_flower_config(text) == text, "run: python -m fedcl.options --pyproject"
    assert flower_config() in text
    flower_defaults = tomllib.loads(text)["tool"]["flwr"]["app"]["config"]
    assert flower_defaults == RunConfig().to_mapping()
    assert RunConfig.from_mapping(flower_defaults) == RunConfig()


def test_round_trip_through_kebab_case_mapping():
    config = RunConfig(clients=7, image_size=128, lr=0.01)
    assert RunConfig.from_mapping(config.to_mapping()) == config
    assert config.to_mapping()["image-size"] == 128


def test_toml_file_with_the_flag_names(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('clients = 4\nimage-size = 32\nstrategy = "fedavg"\nlr = 1\n')
    config = RunConfig.from_toml(path)
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
        ({"dbc-optimizer": "sgd"}, "unknown dbc-optimizer 'sgd'"),
        ({"scenario": "idd"}, "unknown scenario 'idd'.*Did you mean 'iid'"),
        ({"image_size": 64}, "unknown key 'image_size'.*Did you mean 'image-size'"),
    ],
)
def test_invalid_values_name_the_key_and_what_was_expected(values, message):
    with pytest.raises(FedclError, match=message):
        RunConfig.from_mapping(values, source="my.toml")


def test_unknown_keys_are_ignored_only_when_not_strict():
    config = RunConfig.from_mapping({"server-round": 3, "clients": 2}, strict=False)
    assert config.clients == 2


def test_missing_and_malformed_toml_files(tmp_path):
    with pytest.raises(FedclError, match="does not exist"):
        RunConfig.from_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("clients = = 3\n")
    with pytest.raises(FedclError, match="is not valid TOML"):
        RunConfig.from_toml(bad)


def test_default_run_directory_names_the_run():
    config = RunConfig(seed=4).with_run_dir()
    assert config.out.startswith("runs/fedavg-iid-s4-")
    assert RunConfig(out="x").with_run_dir().out == "x"


def test_a_run_recorded_before_a_key_existed_is_read_as_it_ran(tmp_path):
    from fedcl.config import RECORDED_BEFORE

    old = RunConfig(scenario="catastrophic-forgetting").to_mapping()
    del old["stage-shift"], old["dbc-evidence-floor"]
    (tmp_path / "config.toml").write_text(tomli_w.dumps(old))
    assert RunConfig.from_run_dir(tmp_path).stage_shift == "stain" == RECORDED_BEFORE["stage-shift"]
    assert RunConfig.from_run_dir(tmp_path).dbc.evidence_floor == 0.0
    assert RunConfig.from_toml(tmp_path / "config.toml").stage_shift == "tissue"  # a user's file


def test_a_run_says_which_keys_it_did_not_read():
    fedavg = RunConfig()
    assert {"dbc-tau", "lwf-weight", "proximal-mu", "drift-ratio", "stages", "label-map"} <= set(
        fedavg.unread_keys()
    )
    assert (
        "site-stain" not in fedavg.unread_keys()
        and "lwf-weight" not in RunConfig(strategy="lwf").unread_keys()
    )
    dbc = RunConfig(strategy="dbc", scenario="catastrophic-forgetting")
    assert "dbc-tau" not in dbc.unread_keys() and "stage-shift" not in dbc.unread_keys()
    assert "forgetting-strength" in dbc.unread_keys()  # the tissue shift has no strength
    real = RunConfig(data="bcss:/x")  # the folder is checked when a run starts
    assert "site-stain" in real.unread_keys() and "label-map" not in real.unread_keys()


def test_config_toml_names_the_unread_keys_and_reloads_as_written(tmp_path):
    from fedcl.recorder import _toml

    config = RunConfig(strategy="fedprox", proximal_mu=0.1)
    path = tmp_path / "config.toml"
    path.write_bytes(_toml(config))
    text = path.read_text()
    assert text.startswith("# Keys this run did not read") and "dbc-tau" in text.split("\n\n")[0]
    assert RunConfig.from_toml(path) == config


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
    from fedcl.config import DBCSettings, keys

    names = [k.name for k in keys()]
    assert len(names) == len(set(names)) == len(RunConfig().to_mapping())
    assert RunConfig.from_mapping({"dbc-lambda": 0.5}).dbc.lambda_offdiag == 0.5
    assert RunConfig().with_keys({"dbc-tau": 2.0, "lwf-weight": 0.5}).dbc == DBCSettings(tau=2.0)
    assert RunConfig().with_keys({"lwf-weight": 0.5}).lwf.weight == 0.5
    with pytest.raises(FedclError, match="'dbc-tau' must be > 0, got 0"):
        RunConfig.from_mapping({"dbc-tau": 0}, source="x")
    with pytest.raises(FedclError, match="'lwf-temperature' must be > 0"):
        RunConfig.from_mapping({"lwf-temperature": 0.0})


def test_a_strategys_own_section_counts_only_for_that_strategy():
    from fedcl.config import DBCSettings

    tuned = DBCSettings(tau=9.0)
    assert RunConfig(strategy="fedavg", dbc=tuned).as_read().dbc == DBCSettings()
    assert RunConfig(strategy="dbc", dbc=tuned).as_read().dbc == tuned


def test_the_committed_run_directories_still_load():
    found = sorted((ROOT / "docs" / "results").glob("**/config.toml"))
    assert found, "the committed result folders hold run configurations"
    for path in found:
        assert RunConfig.from_run_dir(path.parent).rounds >= 1, path


def test_a_nested_section_must_be_its_declared_class():
    from fedcl.config import LwFSettings

    with pytest.raises(FedclError, match="config section 'dbc' must be DBCSettings"):
        RunConfig(dbc=LwFSettings())
