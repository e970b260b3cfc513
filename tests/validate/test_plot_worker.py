"""The forked plotting helper draws the same file as the command's own process, and fails the same way."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from cryoscape.errors import OutputExistsError
from cryoscape.validate.fsc import save_fsc_plot
from cryoscape.validate.plot_worker import PlotWorker


def _curves() -> dict[str, np.ndarray]:
    c = np.linspace(1.0, 0.0, 17)
    return {"unmasked": c, "masked": c**2}


def test_the_helper_draws_the_same_png_as_this_process(tmp_path: Path) -> None:
    mine = save_fsc_plot(tmp_path / "mine.png", _curves(), 32, 2.0, thresholds=(0.143, 0.5))
    with PlotWorker() as plots:
        if sys.platform.startswith("linux"):
            assert plots.forked
        theirs = plots.save_fsc_plot(tmp_path / "theirs.png", _curves(), 32, 2.0, thresholds=(0.143, 0.5))
    assert theirs == tmp_path / "theirs.png"
    assert theirs.read_bytes() == mine.read_bytes()
    assert not plots.forked


def test_the_helper_refuses_to_overwrite_like_this_process(tmp_path: Path) -> None:
    (tmp_path / "fsc.png").write_bytes(b"keep")
    with PlotWorker() as plots:
        with pytest.raises(OutputExistsError):
            plots.save_fsc_plot(tmp_path / "fsc.png", _curves(), 32, 2.0)
        # after an error the helper is gone and plots are drawn here
        assert not plots.forked
        assert plots.save_fsc_plot(tmp_path / "other.png", _curves(), 32, 2.0).is_file()
    assert (tmp_path / "fsc.png").read_bytes() == b"keep"


def test_a_submitted_plot_is_drawn_while_the_caller_works(tmp_path: Path) -> None:
    mine = save_fsc_plot(tmp_path / "mine.png", _curves(), 32, 2.0, thresholds=(0.143, 0.5))
    with PlotWorker() as plots:
        finish = plots.submit_fsc_plot(tmp_path / "theirs.png", _curves(), 32, 2.0, thresholds=(0.143, 0.5))
        (tmp_path / "meanwhile.txt").write_text("the caller's own work")
        assert finish() == tmp_path / "theirs.png"
    assert (tmp_path / "theirs.png").read_bytes() == mine.read_bytes()
    with PlotWorker() as plots:  # an error surfaces when the caller collects the plot
        finish = plots.submit_fsc_plot(tmp_path / "theirs.png", _curves(), 32, 2.0)
        with pytest.raises(OutputExistsError):
            finish()
