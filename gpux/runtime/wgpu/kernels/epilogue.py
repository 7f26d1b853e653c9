"""Epilogues: elementwise work that a GEMM kernel (MatMul, Gemm, Conv) does on each value
between computing it and storing it, so that a bias Add, a GELU, a residual Add or a Relu after
the product costs no dispatch and no pass over memory of its own.

An :class:`Epilogue` is a chain of elementwise steps (``elementwise.Step``) in which the
operand ``"v"`` is the kernel's value for one output element (after the kernel's own alpha
and bias). Its other inputs are the fused node's inputs from ``first_input`` on; they
broadcast into the chain's shape, which has as many elements as the kernel's output, in the
same order (a Reshape between the product and the chain moves no data). The kernel declares
what :func:`epilogue_code` gives in its shader and runs ``apply`` where it has ``v`` and the
flat output index ``at``, then stores ``result``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpux.runtime.wgpu.kernel import Binding, TensorInfo
from gpux.runtime.wgpu.kernels.elementwise import Step, chain_code

# The value a kernel hands its epilogue, as the steps' operand and as the WGSL name.
VALUE = "v"


@dataclass(frozen=True)
class Epilogue:
    steps: tuple[Step, ...]  # operand VALUE: the kernel's value
    inputs: tuple[TensorInfo | None, ...]  # the node's inputs first_input, first_input + 1...
    constants: Mapping[int, np.ndarray[Any, Any]]  # those known at load, by position in inputs
    first_input: int

    @property
    def output(self) -> TensorInfo:
        return self.steps[-1].context.outputs[0]


@dataclass(frozen=True)
class EpilogueCode:
    declarations: str  # storage bindings of the epilogue's inputs
    functions: str
    apply: str  # WGSL lines computing the steps from ``v`` at flat index ``at``
    result: str  # the value to store
    bindings: tuple[Binding, ...]  # what the declarations bind, in order


NO_EPILOGUE = EpilogueCode("", "", "", VALUE, ())


def epilogue_code(epilogue: Epilogue | None, first_binding: int) -> EpilogueCode:
    """The WGSL of ``epilogue`` for a kernel whose own bindings end before ``first_binding``."""
    if epilogue is None:
        return NO_EPILOGUE
    code = chain_code(
        epilogue.steps,
        epilogue.inputs,
        epilogue.constants,
        index="at",
        first_binding=first_binding,
        prefix="epilogue_",
    )
    return EpilogueCode(
        declarations="\n".join(code.declarations) + "\n",
        functions=code.functions,
        apply="\n".join(code.body) + "\n",
        result=code.result,
        bindings=tuple(Binding("input", epilogue.first_input + k) for k in code.bound),
    )


def input_dtypes(epilogue: Epilogue | None) -> list[np.dtype[Any]]:
    """The dtypes the epilogue reads (for ``enable f16``)."""
    if epilogue is None:
        return []
    return [info.dtype for info in epilogue.inputs if info is not None]
