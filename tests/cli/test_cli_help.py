"""First-use text of the commands: every option with a default says it in --help, no help or
example names files a user's clone lacks (../shared), and `mlpot info` says which split each
error belongs to."""

import argparse
from pathlib import Path

import pytest

import mlpot
from mlpot import cli
from mlpot.cli import build_parser, main

def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


#: Every registered command (the registry of mlpot.cli), each held to "every default is shown".
COMMANDS = tuple(cli.COMMANDS)


def _defaults(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of ``sub`` that have a default to show: not None/False/empty/suppressed."""
    return [action for action in sub._actions
            if action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))
            and action.default not in (None, False, [], argparse.SUPPRESS)]


def test_the_registry_is_what_the_parser_offers():
    assert set(COMMANDS) == set(_subparsers())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_default_is_in_the_help(command, capsys):
    sub = _subparsers()[command]
    for action in _defaults(sub):
        expanded = sub._get_formatter()._expand_help(action) if action.help else ""
        assert f"(default: {action.default})" in expanded, (command, action.dest, expanded)
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())  # argparse wraps long help lines
    for action in _defaults(sub):
        assert f"(default: {action.default})" in flat, (command, action.dest)
    assert "../shared" not in out


def test_md_help_lists_its_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["md", "--help"])
    out = capsys.readouterr().out
    for shown in ("(default: nve)", "(default: 300.0)", "fs (default: 0.5)", "(default: 1000)",
                  "(default: 0.01)", "(default: auto)"):
        assert shown in out


def test_no_command_help_or_example_names_the_shared_folder():
    """A clone has no ../shared: examples name the files it ships or say where to get data."""
    root = Path(__file__).resolve().parents[2]
    for command, sub in _subparsers().items():
        assert "../shared" not in sub.format_help(), command
    assert "../shared" not in (root / "examples" / "api_example.py").read_text()


def test_info_names_the_split_of_each_error(tmp_path, capsys):
    from test_models import make_model

    metrics = {"energy_rmse_mev_per_atom": 1.5, "energy_mae_mev_per_atom": 1.0, "force_rmse_mev_per_a": 80.0,
               "force_mae_mev_per_a": 50.0, "stress_rmse_gpa": None}
    mlpot.save(make_model(), tmp_path / "model.pt",
               {"epoch": 7, "val_loss": 0.01, "val_metrics": {**metrics, "n_structures": 100},
                "train_metrics": {**metrics, "energy_rmse_mev_per_atom": 5.0, "n_structures": 900}})
    assert main(["info", str(tmp_path / "model.pt")]) == 0
    out = capsys.readouterr().out
    validation = next(line for line in out.splitlines() if "validation errors" in line)
    training = next(line for line in out.splitlines() if "training errors" in line)
    assert "E RMSE 1.5" in validation and "100 structures, held out of training" in validation
    assert "E RMSE 5" in training and "900 structures, the training set" in training
    assert "best epoch" in out and "val_metrics" not in out and "train_metrics" not in out
