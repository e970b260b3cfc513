#!/usr/bin/env bash
# Set up the environments the benchmarks need.  Idempotent: re-running only
# installs what is missing.
#
#   benchmarks/_envs/cryodrgn   a separate venv with cryoDRGN (GPL; run only as
#                               a separate program, never imported by cryoscape)
#   benchmarks/_envs/recovar    optional: a separate venv with RECOVAR and CPU JAX
#                               (non-commercial licence; run only as a separate
#                               program). A failed install is logged, not fatal;
#                               SKIP_RECOVAR=1 skips it.
#   /work/main/.venv            gets torch-fourier-slice (benchmark-only extra)
#
# torch is pinned to the CPU build already used by the project (2.13.0) in
# both environments so that pip never pulls CUDA wheels or swaps torch.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PROJECT_VENV="${PROJECT_VENV:-$ROOT/.venv}"
ENVS="$HERE/_envs"
DRGN_VENV="$ENVS/cryodrgn"
PYTHON="${PYTHON:-$PROJECT_VENV/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

mkdir -p "$ENVS"
CONSTRAINTS="$ENVS/constraints.txt"
# A constraints file keeps every later pip call from replacing torch.
echo "torch==${TORCH_VERSION}" > "$CONSTRAINTS"

log() { echo "[setup_envs] $*" >&2; }

# ---- cryoDRGN venv -------------------------------------------------------
if [ ! -x "$DRGN_VENV/bin/python" ]; then
    log "creating $DRGN_VENV"
    # use the base interpreter behind the project venv (not the venv itself)
    BASE_PY="$("$PYTHON" -c 'import sys; print(sys._base_executable)')"
    "$BASE_PY" -m venv "$DRGN_VENV"
fi
DPIP=("$DRGN_VENV/bin/python" -m pip)
if ! "$DRGN_VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('${TORCH_VERSION}') else 1)" 2>/dev/null; then
    log "installing torch==${TORCH_VERSION} (CPU) into the cryoDRGN venv"
    "${DPIP[@]}" install "torch==${TORCH_VERSION}"
fi
if ! "$DRGN_VENV/bin/python" -c "import cryodrgn" 2>/dev/null; then
    log "installing cryodrgn into the cryoDRGN venv (torch held at ${TORCH_VERSION})"
    "${DPIP[@]}" install -c "$CONSTRAINTS" cryodrgn
fi
# sanity: torch must still be the pinned build
"$DRGN_VENV/bin/python" -c "import torch; assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__"

# ---- RECOVAR venv (optional) ---------------------------------------------
RECOVAR_VENV="$ENVS/recovar"
RECOVAR_LOG="$ENVS/recovar_install.log"
if [ "${SKIP_RECOVAR:-0}" != "1" ]; then
    if ! "$RECOVAR_VENV/bin/python" -c "import recovar, jax" 2>/dev/null; then
        log "installing recovar (CPU JAX) into $RECOVAR_VENV (optional; log in $RECOVAR_LOG)"
        if {
            { [ -x "$RECOVAR_VENV/bin/python" ] || \
                "$("$PYTHON" -c 'import sys; print(sys._base_executable)')" -m venv "$RECOVAR_VENV"; } &&
            "$RECOVAR_VENV/bin/python" -m pip install -c "$CONSTRAINTS" recovar &&
            "$RECOVAR_VENV/bin/python" -c "import recovar, jax; print('jax', jax.__version__, jax.devices())"
        } > "$RECOVAR_LOG" 2>&1; then
            log "recovar installed"
        else
            log "warning: recovar could not be installed (not fatal); last lines of $RECOVAR_LOG:"
            tail -n 5 "$RECOVAR_LOG" >&2 || true
        fi
    fi
else
    log "SKIP_RECOVAR=1: not setting up $RECOVAR_VENV"
fi

# ---- torch-fourier-slice in the project venv ------------------------------
if [ -x "$PROJECT_VENV/bin/python" ]; then
    if ! "$PROJECT_VENV/bin/python" -c "import torch_fourier_slice" 2>/dev/null; then
        log "installing torch-fourier-slice into $PROJECT_VENV (torch held at ${TORCH_VERSION})"
        # torch-fourier-slice 0.6.0 imports torch_ctf without declaring it.
        "$PROJECT_VENV/bin/python" -m pip install -c "$CONSTRAINTS" torch-fourier-slice torch-ctf
    fi
    "$PROJECT_VENV/bin/python" -c "import torch_fourier_slice"
    "$PROJECT_VENV/bin/python" -c "import torch; assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__"
else
    log "warning: project venv $PROJECT_VENV not found; skipping torch-fourier-slice"
fi

# ---- record versions ------------------------------------------------------
{
    echo "{"
    echo "  \"cryodrgn_venv\": $("$DRGN_VENV/bin/python" - <<'PY'
import json, importlib.metadata as md
out = {}
for p in ("cryodrgn", "torch", "numpy", "scipy", "pandas", "starfile", "mrcfile"):
    try:
        out[p] = md.version(p)
    except md.PackageNotFoundError:
        pass
print(json.dumps(out))
PY
),"
    if [ -x "$RECOVAR_VENV/bin/python" ]; then
        echo "  \"recovar_venv\": $("$RECOVAR_VENV/bin/python" - <<'PY'
import json, importlib.metadata as md
out = {}
for p in ("recovar", "jax", "jaxlib", "numpy", "scipy", "finufft", "jax_finufft"):
    try:
        out[p] = md.version(p)
    except md.PackageNotFoundError:
        pass
print(json.dumps(out))
PY
),"
    fi
    echo "  \"project_venv\": $("$PROJECT_VENV/bin/python" - <<'PY'
import json, importlib.metadata as md
out = {}
for p in ("torch-fourier-slice", "torch-ctf", "torch-image-interpolation", "torch-grid-utils", "einops", "torch", "numpy", "finufft"):
    try:
        out[p] = md.version(p)
    except md.PackageNotFoundError:
        pass
print(json.dumps(out))
PY
)"
    echo "}"
} > "$ENVS/versions.json"
log "versions recorded in $ENVS/versions.json"
cat "$ENVS/versions.json"
