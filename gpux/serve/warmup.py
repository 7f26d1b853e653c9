"""Warm-up: one run at each batch size a model will see, before the server reports it ready.

On the CUDA EP the first call of a batch size is the slow one (0.1-0.85 s of convolution
algorithm search, docs/benchmarks.md), so a load balancer must not send traffic before every
preferred size has run once. The warm-up starts as the server starts listening (liveness answers
at once, as Triton's does while its models load) and runs on the model's own threads, where a
request that comes early is served beside it. Readiness
(``/v2/health/ready``, the model's ``/ready``, gRPC ``ServerReady``/``ModelReady``) holds until
it is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpux.serve.app import ServedModel

logger = logging.getLogger("uvicorn.error")  # beside uvicorn's own lines in the log


def warm_up(model: object, sizes: tuple[int, ...]) -> None:
    """One run at each batch size, so the first request of each size is not the slow one."""
    import numpy as np

    from gpux.builder.smoke import generate_inputs
    from gpux.runtime.model import Model

    if not sizes or not isinstance(model, Model):
        return
    if not all(t.shape and not isinstance(t.shape[0], int) for t in model.inputs):
        return  # a fixed batch: there is nothing to warm
    from gpux.runtime.instances import instance_count

    one = generate_inputs(model.inputs)
    # Sequential calls go round the instances (least busy, then fewest calls): one call per
    # instance warms each of them at this size.
    for size in sizes:
        for _ in range(instance_count(model.backend)):
            model.run({name: np.repeat(value[:1], size, axis=0) for name, value in one.items()})


async def warm_served(served: ServedModel) -> None:
    """Warm ``served`` on its executor, then mark it ready; a failure is logged and leaves the
    model not ready (its reason in the readiness answer), and the server up."""
    sizes = served.limits.preferred_batch_sizes
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(served.executor, warm_up, served.model, sizes)
    except Exception as exc:  # the model is broken at one size: say so, keep serving the rest
        served.warm_error = f"warm-up failed: {type(exc).__name__}: {exc}"
        logger.error("model %s: %s", served.name, served.warm_error)
        return
    served.warm = True
    if sizes:
        logger.info(
            "model %s ready: batch sizes %s warm in %.2f s",
            served.name,
            ", ".join(map(str, sizes)),
            time.perf_counter() - started,
        )
