"""Bad input ends in one clear line: every malformed file of the corpus, through every command
that reads a dataset, exits with status 2 and one line naming the file and the problem, with
no traceback, no hang and nothing written."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import yaml

from malformed_corpus import Case, build_corpus
from reliability_setup import PYTHON, ROOT, cli, emt_cells, files_under, subprocess_env, tiny_config, write_model

pytestmark = pytest.mark.usefixtures("one_thread")

COMMANDS = ("describe", "evaluate", "convert", "train")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    marker = root / "MARKER"
    cases = build_corpus(root / "files", marker)
    model = write_model(root / "model.pt")
    for case in cases:
        (root / f"{case.name}.yaml").write_text(yaml.safe_dump(tiny_config(case.path)))
    return root, model, marker, cases


def command_line(command: str, case: Case, root, model) -> list:
    return {"describe": ["describe", case.path],
            "evaluate": ["evaluate", model, case.path, "--json"],
            "convert": ["convert", case.path, root / "converted.h5"],
            "train": ["train", root / f"{case.name}.yaml", "--out", root / "run", "--no-progress"]}[command]


def problems(rc: int, out: str, err: str, command: str, case: Case, written: set[str]) -> list[str]:
    """What is wrong with how ``command`` ended on ``case`` (empty: all is well)."""
    found = []
    line = err.strip()
    if rc != 2:
        found.append(f"exit status {rc}, expected 2")
    if "\n" in line or "Traceback" in err:
        found.append("more than one line on stderr")
    if not line.startswith(f"mlpot {command}: error: "):
        found.append("no 'mlpot COMMAND: error:' prefix")
    if case.path.name not in line:
        found.append("the file is not named")
    if not re.search(case.problem, line):
        found.append(f"the problem is not stated (expected /{case.problem}/)")
    if out.strip():
        found.append(f"printed on stdout: {out.strip()[:80]!r}")
    if written:
        found.append(f"wrote {sorted(written)}")
    return found


def test_the_corpus_covers_every_reader(corpus):
    from mlpot.data import FORMATS

    readers = {"ase" if case.reader == "extxyz" else case.reader for case in corpus[3]}
    assert readers == set(FORMATS)
    assert len(corpus[3]) >= 45


@pytest.mark.parametrize("command", COMMANDS)
def test_every_malformed_input_ends_in_one_clear_line(corpus, command, capsys):
    root, model, marker, cases = corpus
    failures = []
    for case in cases:
        before = files_under(root)
        rc, out, err = cli(command_line(command, case, root, model), capsys)
        trouble = problems(rc, out, err, command, case, files_under(root) - before)
        if trouble:
            failures.append(f"{case.name}: {'; '.join(trouble)}\n    {err.strip()}")
    assert not failures, f"mlpot {command}:\n" + "\n".join(failures)
    assert not marker.exists()


def test_elements_unknown_to_the_model(corpus, tmp_path, capsys):
    import ase.io

    _, model, _, _ = corpus
    silver = emt_cells(2, seed=2)
    for atoms in silver:
        atoms.numbers[0] = 47
    ase.io.write(tmp_path / "silver.extxyz", silver)
    rc, out, err = cli(["evaluate", model, tmp_path / "silver.extxyz"], capsys)
    assert rc == 2 and out == "" and "\n" not in err.strip()
    assert "'Ag'" in err and "structure 0" in err
    named = tmp_path / "named.yaml"
    named.write_text(yaml.safe_dump({"elements": ["Cu", "Au"], "cutoff": 4.0,
                                     "radial": [{"grid": {"count": 3, "mode": "shift", "r_lower": 1.5}}]}))
    rc, out, err = cli(["describe", tmp_path / "silver.extxyz", "--config", named], capsys)
    assert rc == 2 and "'Ag'" in err and "\n" not in err.strip()


def test_absurd_header_in_a_real_process_fails_within_seconds(tmp_path):
    """The same through ``python -m mlpot``: the real entry point, exit status and streams."""
    path = tmp_path / "huge.extxyz"
    path.write_text("3000000000\nProperties=species:S:1:pos:R:3 energy=1.0\nH 0 0 0\nH 0 0 1\n")
    start = time.perf_counter()
    proc = subprocess.run([PYTHON, "-m", "mlpot", "describe", str(path)], capture_output=True, text=True,
                          timeout=120, env=subprocess_env(), cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"mlpot describe: error: {path}, line 1: the XYZ frame header claims 3000000000")
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.extxyz"]
    assert elapsed < 60  # the interpreter and torch start-up; the check itself takes milliseconds


def test_describe_takes_a_training_config(tmp_path, capsys):
    """`mlpot describe DATA --config TRAINING.yaml`: the descriptor's elements come from the data."""
    from mlpot.cli.describe import descriptor_from_file

    spec = descriptor_from_file(ROOT / "examples" / "ethanol.yaml", 5.0)(["C", "H", "O"])
    assert spec.elements == ("C", "H", "O") and spec.max_cutoff == 4.5
    import ase.io

    ase.io.write(tmp_path / "cells.extxyz", emt_cells(3))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path / "cells.extxyz")))
    rc, out, err = cli(["describe", tmp_path / "cells.extxyz", "--config", tmp_path / "train.yaml", "--json"],
                       capsys)
    assert rc == 0, err
    assert yaml.safe_load(out)["descriptor"]["elements"] == ["Cu", "Au"]


def test_invalid_yaml_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("descriptor: [unclosed\n  a: b: c\n")
    for args in (["describe", tmp_path / "x.extxyz", "--config", bad], ["train", bad]):
        rc, out, err = cli(args, capsys)
        assert rc == 2 and "\n" not in err.strip() and "Traceback" not in err
        assert f"{bad}: not valid YAML: line 2, column 4" in err
