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


_ENTRY = """
import atexit, sys
import cryoscape.cli.main as cli
marker = sys.argv[1]
atexit.register(lambda: open(marker, "w").write("exit handlers ran"))
sys.argv = ["cryoscape"] + sys.argv[2:]
print("buffered line", end="")
cli.entry()
"""


def test_the_console_entry_exits_quickly_with_the_status_and_runs_the_exit_handlers(tmp_path) -> None:
    """``entry`` ends the process itself: the status, buffered output and exit handlers all survive."""
    marker = tmp_path / "marker.txt"
    ok = subprocess.run([sys.executable, "-c", _ENTRY, str(marker), "--version"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("buffered line") and "cryoscape" in ok.stdout
    assert marker.read_text() == "exit handlers ran"
    marker.unlink()
    bad = subprocess.run([sys.executable, "-c", _ENTRY, str(marker), "info", str(tmp_path / "none.star")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("cryoscape: error:")
    assert len(bad.stderr.strip().splitlines()) == 1 and marker.exists()
