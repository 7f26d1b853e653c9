"""The WGSL kernels, one module per family. Importing this package registers every kernel
with :func:`gpux.runtime.wgpu.kernel.kernel`; :func:`~gpux.runtime.wgpu.kernel.claimed_ops`
then lists them.

Adding an op:

1. Write ``@kernel("Op")`` (``kernel("Op", "com.microsoft")`` for another domain) over a
   function of :class:`~gpux.runtime.wgpu.kernel.NodeContext` returning a ``Lowering``, in the
   module of its family. Shapes are known: write them into the WGSL as constants (``_wgsl``
   has the flat index, broadcasting, literals and f16 loads/stores).
2. Refuse what the kernel does not do with ``Unsupported`` and the reason (a dtype, an
   attribute, a parameter known only at run time): the executor runs that node on ONNX
   Runtime's CPU provider. Never compute an approximation of something else.
3. Parameters (a Reshape's shape, a Slice's starts) come from ``context.constants``; data
   inputs are bound as storage buffers, never read at load.
4. ``tests/runtime/wgpu/test_conformance.py`` then runs ONNX's node tests of the op (and the
   expanded tests that use it) on the test adapter; ops ONNX does not define need a case in
   ``test_contrib.py``; model-sized shapes go in ``test_kernels.py``.
"""

from gpux.runtime.wgpu.kernels import (
    contrib,
    conv,
    elementwise,
    gather,
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
    "gather",
    "matmul",
    "normalization",
    "pool",
    "reduce",
    "resize",
    "shape",
]
