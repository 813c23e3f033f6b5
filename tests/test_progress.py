"""Progress reports: a tqdm bar on a terminal, plain periodic lines (no carriage returns)
elsewhere, warnings above an open bar, and the training/evaluation/MD call sites."""

import io
import sys
import warnings

import pytest

from mlpot.progress import Progress, eta_text, format_duration, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_durations_and_eta():
    assert format_duration(4.4) == "4 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(7620) == "2 h 07 min"
    assert eta_text(0, 10, 5.0) == "ETA –"
    assert eta_text(2, 10, 30.0) == "ETA 2 min 00 s"  # 15 s each, 8 left


def test_plain_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("MLPOT_PROGRESS", raising=False)
    monkeypatch.setenv("MLPOT_PROGRESS_SECONDS", "0")
    out = io.StringIO()
    report = progress(range(4), desc="epoch 1/3", unit="step", file=out, leave=True)
    assert isinstance(report, Progress)
    report.set_postfix(loss="1.0e-01")
    assert list(report) == [0, 1, 2, 3]
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 5  # one per step (a line every 0 s) and the last one at close
    assert lines[1].startswith("epoch 1/3: 2/4 step (50%)") and "ETA" in lines[1] and "loss=1.0e-01" in lines[1]


def test_plain_lines_wait_for_the_interval(monkeypatch):
    monkeypatch.delenv("MLPOT_PROGRESS", raising=False)
    monkeypatch.setenv("MLPOT_PROGRESS_SECONDS", "3600")
    out = io.StringIO()
    with progress(total=1000, desc="work", file=out) as report:
        for _ in range(1000):
            report.update()
    assert out.getvalue() == ""  # short work prints nothing


def test_bar_on_a_terminal_writes_warnings_above_it(monkeypatch, capsys):
    """While a bar is open, a warning is written above it (tqdm.write), formatted by whatever
    showed warnings before (here a command line's own format); recording still works."""
    from mlpot import progress as module

    monkeypatch.delenv("MLPOT_PROGRESS", raising=False)

    def custom(message, category, filename, lineno, file=None, line=None):
        (file or sys.stderr).write(f"mlpot md: warning: {message}\n")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = custom
        bar = progress(total=3, desc="MD nve", unit="step", file=_Terminal())
        assert any(c.__name__ == "tqdm" for c in type(bar).__mro__)
        assert warnings.showwarning is module._write_warning_above_bar
        warnings.warn_explicit("descriptors beyond the training range", UserWarning, "user.py", 7)
        bar.close()
        assert warnings.showwarning is custom  # restored when the last bar closes
    assert "mlpot md: warning: descriptors beyond the training range" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="recorded"):
        with progress(total=1, file=_Terminal()):
            warnings.warn("recorded", UserWarning)


def test_environment_chooses_the_mode(monkeypatch):
    out = _Terminal()
    monkeypatch.setenv("MLPOT_PROGRESS", "lines")
    assert isinstance(progress(range(2), file=out), Progress)
    monkeypatch.setenv("MLPOT_PROGRESS", "off")
    monkeypatch.setenv("MLPOT_PROGRESS_SECONDS", "0")
    quiet = progress(range(2), file=out)
    assert list(quiet) == [0, 1] and out.getvalue() == ""
    monkeypatch.setenv("MLPOT_PROGRESS", "lines")
    monkeypatch.setenv("MLPOT_PROGRESS_SECONDS", "0")
    assert list(progress(range(2), desc="x", file=out)) == [0, 1]
    assert out.getvalue().count("x: ") == 2
    assert list(progress(range(2), file=out, enabled=False)) == [0, 1]


def test_evaluate_progress_into_a_log_has_no_carriage_returns(monkeypatch, capsys):
    """mlpot evaluate (and training, MD) report through mlpot.progress: into a file or pipe
    (pytest's capture is not a terminal) they write plain lines, never bar frames."""
    from test_models import make_model
    from structures_for_tests import water_box
    from ase.calculators.singlepoint import SinglePointCalculator
    import numpy as np

    from mlpot.evaluation import evaluate

    monkeypatch.delenv("MLPOT_PROGRESS", raising=False)
    monkeypatch.setenv("MLPOT_PROGRESS_SECONDS", "0")
    model = make_model()
    structures = []
    for seed in range(3):
        atoms = water_box(seed=seed)
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
        structures.append(atoms)
    evaluate(model, structures, batch_size=1, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "evaluate: 3/3 batch (100%)" in err


@pytest.mark.parametrize("path", ["mlpot/training/loop.py", "mlpot/training/stack_loop.py",
                                  "mlpot/training/data.py", "mlpot/evaluation.py", "mlpot/md/engine.py",
                                  "mlpot/md/ase_driver.py"])
def test_call_sites_use_the_helper(path):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / path).read_text()
    assert "tqdm" not in text and "progress" in text
