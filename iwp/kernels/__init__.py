"""Triton kernels for CUDA: PC-MMR (pc_mmr.py), the vision rotary embedding (rotary.py). Importing this package
imports no Triton; cuda_pc_mmr() / cuda_rotary() do, the first time a CUDA run needs the kernels."""

MAX_POOL = 254           # candidates per step at most: larger pools cost more than the steps they save
SORT_CHUNK = 2048        # tokens each program of the ranking kernel sorts
MAX_TOKENS = 32 * SORT_CHUNK   # the merge kernel sorts the top keys of every chunk in one program


def cuda_pc_mmr():
    """The kernels' module (imports Triton); its AVAILABLE says whether Triton is installed."""
    from . import pc_mmr
    return pc_mmr


def cuda_rotary():
    """The fused vision rotary module (imports Triton); its AVAILABLE says whether Triton is installed."""
    from . import rotary
    return rotary
