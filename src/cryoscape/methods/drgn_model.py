"""The model of a gradient fit: built from the settings, started from the data, rebuilt from a run.

The method layer is where a representation meets its inference scheme, so it
is the one place that knows the concrete representation classes: it builds
the representation from ``config.yaml`` (:func:`cryoscape.models.build_representation`),
starts it from the consensus map (and, for the linear representation, the
top principal volumes of the low-resolution covariance), wraps it with the
scheme's encoder or latent table (:class:`cryoscape.inference.latent_model.LatentModel`),
and reads a finished run's weights back for volumes at latent points.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cryoscape.errors import InputError
from cryoscape.methods.latent_point import latent_point
from cryoscape.methods.drgn_settings import DrgnSettings, settings_from_params

__all__ = ["build_model", "start_representation", "canonical_latents", "load_decoder", "drgn_volume",
           "representation_volume"]


def build_model(params: dict[str, Any], box: int, n_particles: int, device: str = "cpu", apix: float = 1.0) -> Any:
    """A fresh :class:`~cryoscape.inference.latent_model.LatentModel` from a run's params (weights: seeded init);
    ``apix``: the particles' pixel size (Å)."""
    import torch

    from cryoscape.inference.batches import fit_points
    from cryoscape.inference.latent_model import LatentModel
    from cryoscape.models import build_representation
    from cryoscape.models.encoder import build_encoder

    s = settings_from_params(params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(s.seed))
        decoder = build_representation(s.decoder_spec(box, float(apix)))
        encoder = None
        if s.uses_encoder:
            pts = fit_points(box, s.max_freq, s.encoder_max_freq).encoder
            encoder = build_encoder({"kind": s.encoder, "latent_dim": s.latent_dim, "hidden": s.enc_hidden,
                                     "layers": s.enc_layers, "box": box, "pose": s.encoder_pose}, pts)
        model = LatentModel(decoder, encoder, n_particles, refine_poses=s.refine_poses,
                            explicit=s.latents == "explicit")
    return model.to(device)


def start_representation(model: Any, ps: Any, s: DrgnSettings, consensus: np.ndarray | None, norm_scale: float,
                         run: Any, progress: bool) -> None:
    """Set the representation's starting state from the data (a fresh fit only).

    Neural: the fixed reference ``V₀`` is the consensus (``base="consensus"``).
    Normal modes: the atomic model and its modes from ``s.model``, the contrast fitted
    to the consensus.
    Linear: the mean starts at the consensus (zero with ``base="none"``) and the
    components at ``sqrt(λ_k) u_k`` of the covariance at ``init_resolution_A``
    (``init="covariance"``) or at small seeded random volumes; all in the decoder's
    units (images divided by ``norm_scale``, negated with ``invert``).
    """
    import torch

    rep = model.decoder
    if s.representation == "normal-modes":
        from cryoscape.methods.nma_model import load_atom_model, start_from_model

        atoms = load_atom_model(s.model, rep.box, float(ps.apix), s.latent_dim, s.cutoff_A, s.mode_rms_A)
        start_from_model(rep, atoms, consensus)
        return
    if s.representation == "neural":
        if consensus is not None:
            rep.set_base(consensus)
        return
    D = rep.box
    mean = np.zeros((D, D, D), np.float32) if consensus is None else consensus
    comps = _linear_components(ps, s, consensus, norm_scale, run, progress, D)
    dev = rep.mean.device
    rep.set_volumes(torch.as_tensor(mean, device=dev), torch.as_tensor(comps, device=dev))


def _linear_components(ps: Any, s: DrgnSettings, consensus: np.ndarray | None, norm_scale: float, run: Any,
                       progress: bool, D: int) -> np.ndarray:
    """Starting principal volumes ``[latent_dim, D, D, D]`` in the decoder's units."""
    if s.init == "covariance" and consensus is not None:
        from cryoscape.inference.covariance import estimate_covariance

        res = max(s.init_resolution_A, 2.5 * float(ps.apix))
        sign = -1.0 if s.invert else 1.0
        with run.log(f"covariance at {res:.3g} Å: the starting principal volumes"):
            cov = estimate_covariance(ps, consensus * (sign * norm_scale), latent_dim=s.latent_dim, resolution_A=res,
                                      use_ctf=s.use_ctf, batch_size=256, progress=progress, device=s.device)
        evals = np.clip(np.asarray(cov.eigenvalues, dtype=np.float64), 0.0, None)
        comps = np.zeros((s.latent_dim, D, D, D), np.float32)
        k = min(s.latent_dim, cov.components.shape[0])
        comps[:k] = cov.components[:k] * (np.sqrt(evals[:k]) * sign / norm_scale)[:, None, None, None]
        return comps
    rng = np.random.default_rng(int(s.seed))
    scale = 1e-3 if consensus is None else 1e-2 * float(np.abs(consensus).max())
    return (scale * rng.standard_normal((s.latent_dim, D, D, D))).astype(np.float32)


def canonical_latents(representation: Any, mean: np.ndarray, var: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Latents in the representation's canonical frame, after training: ``(mean, var, eigenvalues)``.

    A representation linear in its latent (``V(z) = X0 + Σ_k z_k X_k``) is
    fitted only up to an affine change of latent coordinates, and the KL term
    gives every coordinate unit spread whatever the size of its volume. Here the
    latents' average is folded into ``X0`` and the components are made
    orthonormal and ordered by latent variance
    (:meth:`~cryoscape.models.representation.LinearInLatent.orthonormalise_components`
    with the latents' second moment ``E[z zᵀ] + E[diag var]``), as ``fit pca``
    reports them, so the first latent coordinate is the largest motion. The
    volumes at every particle's latent are unchanged. ``var [N, d]`` becomes the
    diagonal of ``T diag(var) Tᵀ``. Other representations pass through
    (eigenvalues None).
    """
    import torch

    from cryoscape.models import is_linear_in_latent

    if not is_linear_in_latent(representation) or representation.latent_dim == 0:
        return mean, var, None
    rep = representation
    z = torch.as_tensor(np.asarray(mean, dtype=np.float64))
    v = torch.as_tensor(np.asarray(var, dtype=np.float64))
    centre = z.mean(0)
    with torch.no_grad():
        X0 = rep.mean.detach() + torch.tensordot(centre.to(rep.dtype), rep.components.detach(), dims=1)
        rep.set_volumes(X0, rep.components.detach())
    z = z - centre
    second = (z.T @ z) / z.shape[0] + torch.diag(v.mean(0))
    T, evals = rep.orthonormalise_components(None, second)
    T = T.double().cpu()
    return ((z @ T.T).numpy().astype(np.float32), (v @ (T * T).T).numpy().astype(np.float32),
            evals.double().cpu().numpy())


# ---------------------------------------------------------------- a finished run
_DECODERS: dict[tuple[str, int], Any] = {}


def load_decoder(run: Any) -> Any:
    """The trained representation of a gradient-fitted run (rebuilt from ``config.yaml``, weights read
    with ``weights_only=True``); the last one read is kept until ``weights.pt`` changes."""
    from cryoscape.io.run_dir import WEIGHTS
    from cryoscape.models import build_representation

    path = run.path / WEIGHTS
    key = (str(path.resolve()), path.stat().st_mtime_ns if path.is_file() else -1)
    if key not in _DECODERS:
        state = run.load_weights()  # one-line error when the fit has not finished
        s = settings_from_params(run.params)
        decoder = build_representation(s.decoder_spec(int(run.box), float(run.apix)))
        sub = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
        try:
            decoder.load_state_dict(sub)
        except RuntimeError as exc:
            raise InputError(f"{path} does not match the model in {run.path}/config.yaml; "
                             "restore the files the fit wrote") from exc
        decoder.eval()
        _DECODERS.clear()
        _DECODERS[key] = decoder
    return _DECODERS[key]


def representation_volume(decoder: Any, z: np.ndarray, norm_scale: float, max_freq: float) -> np.ndarray:
    """The volume ``[D, D, D]`` float32 of a trained representation at latent ``z``, in image units.

    The neural field is evaluated only inside the sphere it was fitted on (``max_freq``
    of Nyquist, plus its reference ``V₀``); any other representation gives its whole volume.
    """
    import torch

    from cryoscape.models.neural import NeuralHyperMolecule

    zt = torch.as_tensor(np.asarray(z, dtype=np.float32).reshape(-1))
    if isinstance(decoder, NeuralHyperMolecule):
        vol = decoder.volume(zt, scale=float(norm_scale), max_freq=float(max_freq))
    else:
        vol = decoder.volumes(zt[None])[0] * float(norm_scale)
    return vol.detach().cpu().numpy().astype(np.float32)


def drgn_volume(run: Any, z: np.ndarray) -> np.ndarray:
    """The volume ``[D, D, D]`` float32 of the run's representation at latent ``z (d,)``, at the run's box."""
    decoder = load_decoder(run)
    z = latent_point(z, decoder.latent_dim, run.path)
    params = run.params
    return representation_volume(decoder, z, float(params["norm_scale"]), float(params.get("max_freq", 1.0)))
