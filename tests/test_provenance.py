"""mlpot.provenance: the code a result came from."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import mlpot
from mlpot.provenance import code_version

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_a_checkout_records_its_head_commit():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    found = code_version()
    assert found["git_commit"] == head and re.fullmatch(r"[0-9a-f]{40}", head)
    assert isinstance(found["git_dirty"], bool)
    assert found["mlpot"] == mlpot.__version__


def test_outside_a_checkout_the_commit_is_none(tmp_path):
    found = code_version(tmp_path)
    assert found["git_commit"] is None and found["git_dirty"] is None
    assert found["mlpot"] == mlpot.__version__ and found["torch"]
