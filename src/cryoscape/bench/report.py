"""Benchmark results as files: ``results.json``, ``results.md`` (a Markdown table) and ``results.html``.

The table has one row per method and per reference (``consensus``,
``oracle``): per-image FSC AUC mean ± std, ``|Spearman|`` (and that of a
latent-curve coordinate where a method writes one), k-NN preservation
(chance level in the header), wall time, and for ``adk-junk`` the outlier
ROC AUC. References have no latents: their latent columns read "—" (the
consensus row's outlier ROC AUC is that of the fit to the consensus map
alone). A note under the table says which window the oracle used; where the
method grid was run, a list under it gives the pairs that cannot run and why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cryoscape.io.atomic import write_text_atomic

__all__ = ["results_table", "results_markdown", "results_sections", "write_results"]

DASH = "—"


def _fmt(x: float | None, digits: int = 3) -> str:
    """``x`` to ``digits`` decimals, or a dash for None / NaN."""
    return DASH if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _has_junk(res: Any) -> bool:
    return any(m.outlier_roc_auc is not None for m in res.methods)


def _chance(res: Any) -> float | None:
    values = [m.knn_chance for m in res.methods if m.knn_chance is not None]
    return float(np.mean(values)) if values else None


def _has_curve(res: Any) -> bool:
    return any(m.curve_spearman_abs is not None for m in res.methods)


def _row(m: Any, junk: bool, curve: bool) -> list[str]:
    """One table row for a method or reference."""
    p = m.per_image
    auc = f"{_fmt(p.mean)} ± {_fmt(p.std)}" + (f" ({p.n_missing} missing)" if p.n_missing else "")
    row = [m.name, auc, _fmt(m.spearman_abs)]
    row += [_fmt(m.curve_spearman_abs)] if curve else []
    row += [_fmt(m.knn_preservation), _fmt(m.wall_s, 1)]
    return row + [_fmt(m.outlier_roc_auc)] if junk else row


def results_table(res: Any) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table (methods first, then references); a column for the
    |Spearman| of a latent-curve coordinate where some method writes one."""
    junk, curve = _has_junk(res), _has_curve(res)
    header = ["method", "per-image FSC AUC (mean ± std)", "|Spearman|"]
    header += ["|Spearman| (latent curve)"] if curve else []
    header += [f"kNN preservation (chance {_fmt(_chance(res))})", "wall s"]
    header += ["outlier ROC AUC"] if junk else []
    return header, [_row(m, junk, curve) for m in [*res.methods, *res.references]]


def _md_row(cells: Sequence[str]) -> str:
    """One Markdown table row, with ``|`` inside cells escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def results_markdown(res: Any) -> str:
    """``results.md``: a title line, the settings and the table."""
    header, rows = results_table(res)
    lines = [f"# cryoscape bench: {res.dataset}", "",
             f"{res.n_particles} particles, box {res.box} px, {res.apix:.4g} Å/px; "
             f"per-image FSC AUC over {res.sample_indices.size} sampled particles (soft-sphere mask, to Nyquist).",
             "", _md_row(header), "|" + "---|" * len(header)]
    lines += [_md_row(r) for r in rows]
    lines += ["", _reference_note(res), ""]
    lines += _skipped_lines(res)
    return "\n".join(lines)


def _skipped_lines(res: Any) -> list[str]:
    """The method grid's pairs that cannot run, one Markdown bullet each (none unless the grid was run)."""
    skipped = getattr(res, "skipped", [])
    if not skipped:
        return []
    return ["Pairs of the method grid that cannot run:", "",
            *[f"- {p.representation} x {p.inference}: {p.reason}" for p in skipped], ""]


def _reference_note(res: Any) -> str:
    """One paragraph on what the two references are (with the oracle's window)."""
    text = ("consensus: one reconstruction from all particles (lower reference). oracle: for each sampled "
            "particle, the reconstruction with true poses from the particles whose true coordinate lies "
            "within a window around its own")
    oracle = next((r for r in res.references if r.name == "oracle" and r.details), None)
    if oracle is not None:
        d = oracle.details
        text += (f" (±{d['half_width']} {d['unit']}, {d['mean_particles']:.0f} particles on average; the "
                 "window with the best predicted per-image FSC AUC, see results.json)")
    text += "."
    if _has_junk(res):
        text += (" Outlier ROC AUC: the larger of the latent-density and the consensus-map-fit outlier "
                 "z-scores; for the consensus row, the fit alone.")
    return text


def _auc_figure(res: Any) -> Any:
    """Per-image FSC AUC of every method and reference, one box per row of the table."""
    from cryoscape.report.figures import new_figure

    entries = [*res.methods, *res.references]
    fig = new_figure(1.2 + 1.1 * len(entries), 3.2)
    ax = fig.add_subplot(1, 1, 1)
    data = [m.per_image.values[np.isfinite(m.per_image.values)] for m in entries]
    ax.boxplot(data)
    ax.set_xticks(range(1, len(entries) + 1), [m.name for m in entries])
    ax.set_ylabel("per-image FSC AUC")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _fsc_figure(res: Any) -> Any:
    """Mean FSC curve (against the true volumes) of every method and reference."""
    from cryoscape.report.figures import fsc_curves
    from cryoscape.validate.fsc import shell_frequencies

    curves = {m.name: m.per_image.mean_curve for m in [*res.methods, *res.references] if m.per_image.mean_curve.size}
    return fsc_curves(curves, shell_frequencies(res.box, res.apix), thresholds=(0.5,))


def results_sections(res: Any) -> Sequence[Any]:
    """Sections of ``results.html``: summary, one table per row, figures."""
    from cryoscape.report.html import Section

    header, rows = results_table(res)
    text = results_markdown(res).splitlines()
    skipped = [f"{p.representation} x {p.inference} cannot run: {p.reason}" for p in getattr(res, "skipped", [])]
    summary = Section("Benchmark", paragraphs=[text[2], _reference_note(res), *skipped],
                      table=[("dataset", res.dataset), ("methods", ", ".join(m.name for m in res.methods))])
    per_row = [Section(r[0], table=list(zip(header[1:], r[1:]))) for r in rows]
    figures = Section("Figures", figures=[(_auc_figure(res), "per-image FSC AUC at the sampled particles"),
                                          (_fsc_figure(res), "mean FSC against the true volumes")])
    return [summary, *per_row, figures]


def write_results(res: Any, force: bool = False) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.html`` into ``res.out_dir``; their paths."""
    from cryoscape.bench.results import RESULTS_HTML, RESULTS_JSON, RESULTS_MD
    from cryoscape.report.html import write_report

    out = Path(res.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = res.to_dict()
    paths = {"json": write_text_atomic(out / RESULTS_JSON, json.dumps(doc, indent=2) + "\n", force),
             "md": write_text_atomic(out / RESULTS_MD, results_markdown(res), force),
             "html": write_report(out / RESULTS_HTML, f"cryoscape bench: {res.dataset}", results_sections(res), force)}
    return {k: Path(v) for k, v in paths.items()}
