"""The reconstruction filters: per-shell weights applied to the finished map, the support, and their kernels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _helpers import error_before_any_progress  # noqa: E402

from cryoscape.geometry.fourier import fftn_c, ifftn_c, radial_shell_index, scale_shells  # noqa: E402
from cryoscape.imaging.wiener import shell_gain  # noqa: E402
from cryoscape.imaging.wiener import wiener_volume as padded_wiener_volume  # noqa: E402
from cryoscape.reconstruct import wiener as W  # noqa: E402
from cryoscape.reconstruct.stream import backproject  # noqa: E402
from cryoscape.validate.fsc import fsc  # noqa: E402

D, APIX = 32, 3.0


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """AdK frame 0, 2000 x 32² at SNR 0.05 with CTF: the half-map FSC nears 0 from shell 10 on."""
    from cryoscape.simulate.dataset import simulate_dataset

    out = tmp_path_factory.mktemp("filters")
    sim = simulate_dataset("adk", n_particles=2000, box=D, apix=APIX, snr=0.05, conformations="0", seed=3,
                           out_dir=out / "sim", force=True, progress=False)
    truth, _ = sim.ground_truth_volume(0)
    sums = backproject(sim.particles(), half_sets=True, progress=False)
    return sim, truth, sums


def _gold(sums, **kw):
    return W.gold_standard((sums.numerator[0], sums.numerator[1]), (sums.weights[0], sums.weights[1]), D, 2, fsc,
                           support=W.box_support(D, APIX), **kw)


def test_the_filter_keeps_every_shell_the_data_hold(noisy) -> None:
    """Weighting the shells of the finished map leaves the FSC against the truth of the plain inverse; the
    same Wiener gain applied before the crop and the support (the earlier order) loses the weak shells."""
    _, truth, sums = noisy
    wiener, plain = _gold(sums), _gold(sums, filter="none")
    ours, reference = fsc(wiener.full, truth), fsc(plain.full, truth)
    assert np.all(ours[1:] >= reference[1:] - 0.03), (np.round(ours, 2), np.round(reference, 2))
    weak = np.flatnonzero(np.abs(wiener.fsc) < 0.05)
    weak = weak[weak >= 8]
    assert weak.size >= 3, np.round(wiener.fsc, 3)
    lam = W.regulariser_from_ssnr(W.shell_mean_weight(sums.weights.sum(0), D, 2), wiener.ssnr_full)
    before_crop = padded_wiener_volume(sums.numerator.sum(0), sums.weights.sum(0).float(), lam, D, 2).numpy()
    earlier = fsc(before_crop * W.box_support(D, APIX), truth)
    assert ours[weak].mean() > 0.1 and ours[weak].mean() > earlier[weak].mean() + 0.08, (ours[weak], earlier[weak])
    assert np.all(wiener.weights_full > 0) and np.all(wiener.weights_full <= 1)


def test_wiener_and_fsc_filters_differ_only_by_a_scale_per_shell(noisy) -> None:
    _, truth, sums = noisy
    wiener, by_fsc = _gold(sums), _gold(sums, filter="fsc")
    np.testing.assert_allclose(fsc(wiener.full, truth), fsc(by_fsc.full, truth), atol=1e-3)  # float32 maps
    np.testing.assert_allclose(wiener.fsc, by_fsc.fsc, atol=1e-4)
    f = np.clip(by_fsc.fsc, W.MIN_SSNR / (2 + W.MIN_SSNR), W.MAX_FSC)  # the final half-map FSC, floored
    np.testing.assert_allclose(by_fsc.weights_full, np.sqrt(2 * f / (1 + f)), rtol=1e-9)
    f_first = np.clip(by_fsc.ssnr_half / (1 + by_fsc.ssnr_half), 0, 1)  # the halves' filter: the first pass's
    np.testing.assert_allclose(by_fsc.weights_half, np.sqrt(f_first), rtol=1e-9)
    assert np.all(_gold(sums, filter="none").weights_full == 1)


def test_filter_weights_formulas() -> None:
    ssnr = np.array([1e3, 1.0, 0.1, 0.0])
    s = np.maximum(ssnr, W.MIN_SSNR)
    np.testing.assert_allclose(W.filter_weights("wiener", ssnr), s / (1 + s))
    half = s / 2
    np.testing.assert_allclose(W.filter_weights("fsc", ssnr, full=True),
                               np.sqrt(2 * (half / (1 + half)) / (1 + half / (1 + half))))
    assert W.filter_weights("wiener", ssnr)[-1] > 0  # floored: nothing is cut
    with pytest.raises(ValueError, match="unknown filter"):
        W.filter_weights("butterworth", ssnr)


def test_scale_shells_matches_a_dense_centred_transform() -> None:
    rng = np.random.default_rng(0)
    vol = torch.as_tensor(rng.normal(size=(2, 16, 16, 16)))
    weights = rng.uniform(0.1, 2.0, 9)
    shells = radial_shell_index(16, 3).clamp(max=8)
    expected = ifftn_c(fftn_c(vol, 3) * torch.as_tensor(weights)[shells], 3).real
    torch.testing.assert_close(scale_shells(vol, weights), expected, rtol=1e-10, atol=1e-10)
    assert scale_shells(vol.float(), weights).dtype == torch.float32


def test_shell_gain_is_the_closed_form_for_even_weights() -> None:
    M = 2 * 16 + 1
    den = torch.full((M, M, M), 4.0)
    gain = shell_gain(den, torch.full((9,), 1.0), 16, 2)
    torch.testing.assert_close(gain, torch.full((9,), 0.8, dtype=torch.float64))
    ramp = shell_gain(den, torch.arange(1.0, 10.0), 16, 2)
    torch.testing.assert_close(ramp, 4.0 / (4.0 + torch.arange(1.0, 10.0, dtype=torch.float64)))


def test_box_support_reaches_zero_inside_the_box() -> None:
    s = W.box_support(32, 1.5)
    assert s[16, 16, 16] == 1 and s[16, 16, 0] == 0 and s[0, 0, 0] == 0
    assert W.box_support(32, 1.5, 0) is None
    narrow = W.box_support(32, 1.5, 24.0)  # 8 px radius, 3 px of it the edge
    assert narrow[16, 16, 16 + 5] == 1 and narrow[16, 16, 16 + 8] == 0


def test_cli_filter_lowpass_and_their_checks(noisy, tmp_path, capsys) -> None:
    from cryoscape.cli.main import main

    sim, _, _ = noisy
    star = str(sim.star_path)
    out = tmp_path / "map.mrc"
    assert main(["reconstruct", star, "-o", str(out), "--filter", "fsc", "--lowpass", "12", "--no-progress"]) == 0
    header = (tmp_path / "map_filter.txt").read_text().splitlines()[0].split(",")
    assert header[3:] == ["fsc_weight_half", "fsc_weight_full", "ssnr_full"]
    table = np.loadtxt(tmp_path / "map_filter.txt", delimiter=",", skiprows=1)
    cut = int(np.ceil(D * APIX / 12.0)) + 1
    assert np.all(table[cut:, 4] == 0) and np.all(table[:cut - 1, 4] > 0)
    assert main(["reconstruct", star, "-o", str(tmp_path / "ov1.mrc"), "--oversampling", "1", "--filter", "none",
                 "--particle-diameter", "0", "--no-progress"]) == 0
    assert np.all(np.loadtxt(tmp_path / "ov1_filter.txt", delimiter=",", skiprows=1)[:, 3:5] == 1)
    capsys.readouterr()
    assert main(["reconstruct", star, "-o", str(tmp_path / "b.mrc"), "--lowpass", "4"]) == 2
    error_before_any_progress(capsys, "--lowpass 4", "Nyquist")
    assert main(["reconstruct", star, "-o", str(tmp_path / "b.mrc"), "--lowpass", "-2"]) == 2
    error_before_any_progress(capsys, "--lowpass -2")
    assert main(["reconstruct", star, "-o", str(tmp_path / "c.mrc"), "--particle-diameter", "-5"]) == 2
    error_before_any_progress(capsys, "--particle-diameter")
    assert not (tmp_path / "b.mrc").exists() and not (tmp_path / "c.mrc").exists()
