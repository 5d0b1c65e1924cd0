import contextlib
import subprocess
import sys

import pytest

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


def _parsed(*args):
    return resolve_config(build_parser().parse_args(["run", *args]))


def test_a_staged_run_derives_its_rounds_unless_they_are_given(tmp_path, capsys):
    staged = ("--scenario", "catastrophic-forgetting", "--stages", "2")
    assert _parsed(*staged, "--rounds-per-stage", "2").rounds == 4
    assert _parsed(*staged, "--rounds-per-stage", "2", "--rounds", "4").rounds == 4
    path = tmp_path / "staged.toml"
    path.write_text('scenario = "drift-and-forgetting"\nstages = 4\nrounds-per-stage = 3\n')
    assert _parsed("--config", str(path)).rounds == 12
    assert _parsed("--config", str(path), "--stages", "2").rounds == 6
    assert _parsed("--rounds-per-stage", "2").rounds == 15  # not staged: the default
    # an explicit, inconsistent value stays an error
    assert main(["run", *staged, "--rounds-per-stage", "2", "--rounds", "15"]) == 2
    assert "must equal stages x rounds-per-stage = 2 x 2 = 4" in capsys.readouterr().err


def test_bad_input_is_answered_before_ray_starts(tmp_path, monkeypatch, capsys):
    import fedcl.simulation

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started before the input was checked")

    monkeypatch.setattr(fedcl.simulation, "local_ray", no_ray)
    assert main(["run", "--strategy", "fedavgg"]) == 2
    assert "unknown strategy 'fedavgg'" in capsys.readouterr().err
    assert main(["run", "--data", "bcss:/no/such/folder"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a layout problem is found without loading torch (fedcl.data.real.check_layout)
    # a mask of another size than its image: read from the files' headers
    from PIL import Image

    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for i, site in enumerate(("A1", "B6")):
        name = f"TCGA-{site}-X{i}-DX1.png"
        Image.new("RGB", (64, 64)).save(tmp_path / "images" / name)
        Image.new("L", (32, 32) if i else (64, 64)).save(tmp_path / "masks" / name)
    script = (
        "import sys\nfrom fedcl.cli import main\n"
        "codes = [main(['run', '--data', 'bcss:/no/such/folder']),\n"
        "         main(['run', '--strategy', 'fedavgg']),\n"
        f"         main(['run', '--data', 'bcss:{tmp_path}', '--clients', '2'])]\n"
        "assert codes == [2, 2, 2] and 'torch' not in sys.modules, codes\n"
    )
    checked = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "is 32x32 pixels but its image is 64x64" in checked.stderr


def test_a_run_never_overwrites_a_run_directory_unless_asked(tmp_path, monkeypatch, capsys):
    import fedcl.simulation

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text("")
    assert main(["run", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run (config.toml)" in err and f"--resume {out}" in err
    assert (out / "config.toml").read_text() == ""  # untouched

    started = []

    def local_ray(*args, **kwargs):
        started.append(args)
        return contextlib.nullcontext()

    monkeypatch.setattr(fedcl.simulation, "local_ray", local_ray)
    monkeypatch.setattr("fedcl.cli.runs.simulate_with_progress", lambda *a, **k: None)
    assert main(["run", "--out", str(out), "--overwrite"]) == 0
    assert started  # asked to: it runs


def test_a_misspelt_flag_gets_a_suggestion(capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--image-szie", "64"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --image-szie" in err and "did you mean --image-size?" in err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["--dbc-tau", "2"], "(--dbc-tau is a key of strategy dbc: name it too)"),
        (["--lwf-wieght", "2"], "(did you mean --lwf-weight, a key of strategy lwf?)"),
        (["--strategy", "dbc", "--dbc-tua", "2"], "(did you mean --dbc-tau?)"),
    ],
)
def test_a_strategys_own_flag_is_a_flag_where_it_is_named(capsys, argv, hint):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *argv])
    assert exit_info.value.code == 2 and hint in capsys.readouterr().err
