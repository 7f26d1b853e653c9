"""What ``gpux doctor`` says about the wgpu engine: the ops it claims and the adapter it would
open, read from the adapters ``discovery`` already listed (no device is opened)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpux.runtime import discovery

# ``device.open_device``'s own order (one policy): a discrete GPU first, a native API (Vulkan,
# Metal, D3D12) before OpenGL; software adapters last, and only where allowed.
from gpux.runtime.wgpu.device import BACKEND_RANK as BACKEND_RANK
from gpux.runtime.wgpu.device import TYPE_RANK as TYPE_RANK
from gpux.runtime.wgpu.device import adapter_rank


def adapter_choice(
    adapters: Sequence[discovery.Adapter], allow_software: bool
) -> discovery.Adapter | None:
    usable = [a for a in adapters if allow_software or not a.is_software]
    if not usable:
        return None
    return min(usable, key=lambda a: adapter_rank(a.adapter_type, a.backend))


def engine_report(adapters: Sequence[discovery.Adapter]) -> dict[str, Any]:
    """``{"claimed_ops", "adapter", "software_allowed", "why"}`` for ``gpux doctor``."""
    from gpux import env
    from gpux.runtime.wgpu.kernel import claimed_ops
    from gpux.runtime.wgpu.partition import register_kernels

    register_kernels()
    allowed = env.wgpu_allow_software()
    chosen = adapter_choice(adapters, allowed)
    report: dict[str, Any] = {
        "claimed_ops": claimed_ops(),
        "adapter": chosen.to_json() if chosen else None,
        "software_allowed": allowed,
    }
    if chosen is None:
        software = sorted({a.name for a in adapters if a.is_software})
        report["why"] = (
            f"only software adapters ({', '.join(software)}); GPUX_WGPU_ALLOW_SOFTWARE=1 allows "
            "them (tests)"
            if software
            else "wgpu sees no adapter"
        )
    return report
