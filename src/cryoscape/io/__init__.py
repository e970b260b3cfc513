"""File formats: MRC, RELION STAR, cryoSPARC .cs, cryoDRGN pickles, atomic output, run directories."""

from cryoscape.io.atomic import atomic_path, check_output_path, write_bytes_atomic, write_text_atomic
from cryoscape.io.cryodrgn import read_ctf_pkl, read_pose_pkl, safe_load_pickle, write_ctf_pkl, write_pose_pkl
from cryoscape.io.cryosparc import read_cs, write_cs
from cryoscape.io.mrc import open_stack, read_mrc, write_mrc
from cryoscape.io.run_dir import RunDirectory, capture_rng_state, restore_rng_state
from cryoscape.io.star import RelionStar, read_star, write_star

__all__ = [
    "atomic_path",
    "check_output_path",
    "write_bytes_atomic",
    "write_text_atomic",
    "read_mrc",
    "write_mrc",
    "open_stack",
    "read_star",
    "write_star",
    "RelionStar",
    "read_cs",
    "write_cs",
    "safe_load_pickle",
    "read_pose_pkl",
    "read_ctf_pkl",
    "write_pose_pkl",
    "write_ctf_pkl",
    "RunDirectory",
    "capture_rng_state",
    "restore_rng_state",
]
