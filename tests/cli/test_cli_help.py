"""First-use text of the commands: every option with a default says it in --help, no help or
example names files a user's clone lacks (../shared), and `mlpot info` says which split each
error belongs to."""

import argparse
from pathlib import Path

import pytest

import mlpot
from mlpot.cli import build_parser, main

#: The commands whose help this test holds to "every default is shown".
COMMANDS = ("md", "evaluate", "convert", "ablate", "report", "train", "info")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_default_is_in_the_help(command):
    sub = _subparsers()[command]
    text = sub.format_help()
    for action in sub._actions:
        if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)):
            continue
        if action.default in (None, [], argparse.SUPPRESS):
            continue  # nothing to show (an unset option, a repeatable one)
        expanded = sub._get_formatter()._expand_help(action)
        assert f"default: {action.default}" in expanded, (command, action.dest, expanded)
    assert "../shared" not in text


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
        if command in COMMANDS:
            assert "../shared" not in (sub.description or ""), command
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
