import subprocess
import sys

from fedcl.cli import build_parser, main, resolve_config


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "fedcl", *args], capture_output=True, text=True, timeout=120
    )


def test_unknown_strategy_is_a_clear_error_without_traceback():
    result = run_cli("run", "--strategy", "fedavgg", "--rounds", "1")
    assert result.returncode == 2
    assert "unknown strategy 'fedavgg'" in result.stderr
    assert "Did you mean 'fedavg'" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_explains_every_option():
    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    for flag in (
        "--strategy",
        "--clients",
        "--rounds",
        "--seed",
        "--image-size",
        "--out",
        "--config",
        "--train-tiles",
        "--model",
    ):
        assert flag in help_text
    assert run_cli("--help").returncode == 0


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("clients = 4\nrounds = 9\n")
    args = build_parser().parse_args(["run", "--config", str(path), "--rounds", "3"])
    config = resolve_config(args)
    assert (config.clients, config.rounds) == (4, 3)


def test_invalid_flag_value_exits_2(capsys):
    assert main(["run", "--rounds", "-1"]) == 2
    assert "command line: config key 'rounds' must be >= 1, got -1" in capsys.readouterr().err


def test_bad_config_file_exits_2(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("clientz = 4\n")
    assert main(["run", "--config", str(path)]) == 2
    assert "unknown key 'clientz'" in capsys.readouterr().err
