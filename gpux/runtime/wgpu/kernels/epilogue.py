"""Epilogues: elementwise work that a GEMM kernel (MatMul, Gemm, Conv) does on each value
between computing it and storing it, so that a bias Add, a GELU, a residual Add or a Relu after
the product costs no dispatch and no pass over memory of its own.

An :class:`Epilogue` is a chain of elementwise steps (``elementwise.Step``) in which the
operand ``"v"`` is the kernel's value for one output element (after the kernel's own alpha
and bias). Its other inputs are the fused node's inputs from ``first_input`` on; they
broadcast into the chain's shape, which has as many elements as the kernel's output, in the
same order (a Reshape between the product and the chain moves no data). With ``transpose``
set, the value is stored where a Transpose of the chain's result would put it (BERT's heads
split after the Q, K and V projections), so the Transpose costs no pass either.

The kernel declares what :func:`epilogue_code` gives in its shader, runs ``apply`` where it
has ``v`` and the flat output index ``at``, then stores ``result`` at index ``store_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpux.runtime.wgpu.kernel import Binding, TensorInfo
from gpux.runtime.wgpu.kernels._wgsl import coordinate, strides
from gpux.runtime.wgpu.kernels.elementwise import Step, chain_code

# The value a kernel hands its epilogue, as the steps' operand and as the WGSL name.
VALUE = "v"


@dataclass(frozen=True)
class Transpose:
    """Store each value where ``Transpose(perm)`` of a tensor of ``shape`` puts it."""

    shape: tuple[int, ...]
    perm: tuple[int, ...]

    def destination(self, flat: str) -> str:
        """WGSL of the output index of the value at flat index ``flat`` of ``shape``."""
        target = [self.shape[axis] for axis in self.perm]
        target_strides = strides(target)
        terms = [
            f"{coordinate(flat, source_axis, self.shape)} * {target_strides[axis]}u"
            for axis, source_axis in enumerate(self.perm)
            if target[axis] != 1
        ]
        return "(" + (" + ".join(terms) or "0u") + ")"


@dataclass(frozen=True)
class Epilogue:
    steps: tuple[Step, ...] = ()  # operand VALUE: the kernel's value
    inputs: tuple[TensorInfo | None, ...] = ()  # the node's inputs first_input, first_input + 1...
    # Those known at load, by position in inputs.
    constants: Mapping[int, np.ndarray[Any, Any]] = field(default_factory=dict)
    first_input: int = 0
    transpose: Transpose | None = None


@dataclass(frozen=True)
class EpilogueCode:
    declarations: str  # storage bindings of the epilogue's inputs
    functions: str
    apply: str  # WGSL lines computing the steps from ``v`` at flat index ``at``
    result: str  # the value to store
    bindings: tuple[Binding, ...]  # what the declarations bind, in order
    store_at: str = "at"  # the output index to store it at


NO_EPILOGUE = EpilogueCode("", "", "", VALUE, ())


def epilogue_code(
    epilogue: Epilogue | None, first_binding: int, prefix: str = "epilogue_"
) -> EpilogueCode:
    """The WGSL of ``epilogue`` for a kernel whose own bindings end before ``first_binding``;
    its names start with ``prefix`` (a kernel with several epilogues gives each its own)."""
    if epilogue is None:
        return NO_EPILOGUE
    store_at = "at" if epilogue.transpose is None else epilogue.transpose.destination("at")
    if not epilogue.steps:
        return EpilogueCode("", "", "", VALUE, (), store_at)
    code = chain_code(
        epilogue.steps,
        epilogue.inputs,
        epilogue.constants,
        index="at",
        first_binding=first_binding,
        prefix=prefix,
    )
    return EpilogueCode(
        declarations="\n".join(code.declarations) + "\n",
        functions=code.functions,
        apply="\n".join(code.body) + "\n",
        result=code.result,
        bindings=tuple(Binding("input", epilogue.first_input + k) for k in code.bound),
        store_at=store_at,
    )


def input_dtypes(epilogue: Epilogue | None) -> list[np.dtype[Any]]:
    """The dtypes the epilogue reads (for ``enable f16``)."""
    if epilogue is None:
        return []
    return [info.dtype for info in epilogue.inputs if info is not None]
