"""Names are data, files are JSON: a hostile model file name is text in the report, and no code path unpickles,
evals, or loads checkpoints unsafely."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from click.testing import CliRunner
from conftest import EXAMPLES, REPO

from convdoctor.cli import main

CODE_FOLDERS = ("analyzer", "rules", "reports", "convdoctor")
UNSAFE = {
    # Pickling is how a job's candidates reach its workers; loading pickles (code execution) is what must not happen.
    "unpickling": re.compile(r"\bpickle\.(load|loads|Unpickler)\b|\bcPickle\b|\bdill\b|\bjoblib\.load\b"),
    "eval/exec of strings": re.compile(r"(?<![\w.])(eval|exec)\("),
    "marshal": re.compile(r"\bmarshal\.loads?\("),
    "yaml.load": re.compile(r"\byaml\.load\("),
}


def test_no_code_path_unpickles_or_evaluates_strings():
    offenders = []
    for folder in CODE_FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for what, pattern in UNSAFE.items():
                    if pattern.search(line):
                        offenders.append(f"{path.relative_to(REPO)}:{number}: {what}: {line.strip()}")
    assert offenders == []


def test_checkpoints_are_only_loaded_with_weights_only():
    for folder in CODE_FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for start in (m.start() for m in re.finditer(r"torch\.load\(", text)):
                call = text[start:text.find(")", start) + 1]
                assert "weights_only=True" in call, f"{path}: {call}"
    # The one place user code runs is the model file the user asked to profile.
    runners = [p for f in CODE_FOLDERS for p in (REPO / f).rglob("*.py") if "exec_module(" in p.read_text()]
    assert [p.relative_to(REPO).as_posix() for p in runners] == ["analyzer/capture/workload.py"]


def test_a_hostile_model_file_name_is_text_in_the_report(tmp_path: Path):
    hostile = tmp_path / "<img src=x onerror=alert(4)>javascript:alert(5).py"
    shutil.copy(EXAMPLES / "seed_grouped.py", hostile)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["profile", str(hostile), "--out", str(out), "--no-measure", "--steps", "1"])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<img" not in html and "&lt;img src=x onerror=alert(4)&gt;" in html
    assert not re.search(r"""(href|src)\s*=\s*["']?\s*javascript:""", html, re.IGNORECASE)
