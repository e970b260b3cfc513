"""The ``cryoscape`` entry point as a user meets it: warnings reach the terminal as one plain line each."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

from cryoscape.cli.main import warnings_as_notes

# A sub-command that warns twice (one message on two lines), registered in a fresh interpreter.
_SCRIPT = """
import sys, types, warnings
import cryoscape.cli.main as cli

mod = types.ModuleType("cryoscape.cli.warner")
def add_parser(sub):
    return sub.add_parser("warner")
def run(args):
    warnings.warn("planted note", UserWarning)
    warnings.warn("second\\n  line", RuntimeWarning)
    return 0
mod.add_parser, mod.run = add_parser, run
sys.modules["cryoscape.cli.warner"] = mod
cli.COMMANDS = cli.COMMANDS + ("warner",)
sys.exit(cli.main(["warner"]))
"""


def _run_cli(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the warning sub-command in a subprocess; PYTHONWARNINGS only as given."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=120)


def test_warnings_print_one_note_line_each():
    proc = _run_cli({})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == ["cryoscape: note: planted note", "cryoscape: note: second line"]


def test_pythonwarnings_keeps_the_python_form():
    proc = _run_cli({"PYTHONWARNINGS": "default"})
    assert proc.returncode == 0, proc.stderr
    assert "cryoscape: note:" not in proc.stderr
    assert "UserWarning: planted note" in proc.stderr and "<string>:" in proc.stderr


def test_routing_is_undone_after_the_command(monkeypatch):
    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    before = warnings.showwarning
    with warnings_as_notes():
        assert warnings.showwarning is not before
    assert warnings.showwarning is before
