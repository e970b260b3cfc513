"""Small assertions shared by the command-line tests."""

from __future__ import annotations

import base64
import re


def one_line_error(capsys, *needles: str) -> str:
    """Assert stderr holds exactly one ``cryoscape: error:`` line containing every needle; return it."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("cryoscape: error:")
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


def embedded_pngs(html: str) -> list[bytes]:
    """The PNG images embedded as data URIs in a self-contained HTML page."""
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def error_before_any_progress(capsys, *needles: str) -> None:
    """One ``cryoscape: error:`` line on stderr and nothing on stdout (no progress line was printed)."""
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == "", captured.out
    assert len(err) == 1 and err[0].startswith("cryoscape: error:"), err
    for n in needles:
        assert n in err[0], (n, err[0])
