"""The WGSL kernels, one module per family. Importing this package registers every kernel
with :func:`gpux.runtime.wgpu.kernel.kernel`; :func:`~gpux.runtime.wgpu.kernel.claimed_ops`
then lists them."""

from gpux.runtime.wgpu.kernels import (
    contrib,
    conv,
    elementwise,
    matmul,
    normalization,
    pool,
    reduce,
    resize,
    shape,
)

__all__ = [
    "contrib",
    "conv",
    "elementwise",
    "matmul",
    "normalization",
    "pool",
    "reduce",
    "resize",
    "shape",
]
