"""GPUX push/pull (``gpux.distribution.transfer``, what ``gpux push``/``gpux pull`` run) of a 100 MB image against a local registry, and oras (oras-py)
pushing and pulling the same files to the same registry, in one run.

The registry is Debian's docker-registry on loopback (``make system-deps`` installs it). Each
round pushes to a fresh repository and pulls into a fresh store / folder, so every byte moves;
the two tools alternate so both see the same machine. Target: GPUX <= 1.2x oras.

    uv run python benchmarks/registry.py [--megabytes 100] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import generated_models
from tests.distribution.registry_server import running_registry


def gpux(home: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "gpux.cli.main", *args],
        env={**os.environ, "GPUX_HOME": str(home), "GPUX_NO_PROGRESS": "1"},
        check=True,
        capture_output=True,
    )


def timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import oras.client

    from gpux.distribution import transfer
    from gpux.store import Store

    with tempfile.TemporaryDirectory(prefix="gpux-bench-registry-") as tmp:
        root = Path(tmp)
        model = generated_models.big(root / "project" / "model.onnx", megabytes=args.megabytes)
        (root / "project" / "GPUXfile").write_text(
            "name: big\nversion: '1.0'\nmodel: ./model.onnx\ninputs:\n  - name: x\n"
        )
        home = root / "home"
        gpux(home, "build", str(root / "project"), "-q", "--no-optimize")
        size_mb = model.stat().st_size / 1e6
        times: dict[str, list[float]] = {
            k: [] for k in ("gpux push", "oras push", "gpux pull", "oras pull")
        }
        with running_registry(root / "registry") as registry:
            client = oras.client.OrasClient(hostname=registry.host, insecure=True)
            for round_number in range(args.rounds):
                gpux_target = f"{registry.host}/bench/gpux{round_number}:1.0"
                oras_target = f"{registry.host}/bench/oras{round_number}:1.0"
                times["gpux push"].append(
                    timed(lambda: transfer.push(Store(home), "big:1.0", gpux_target, insecure=True))
                )
                times["oras push"].append(
                    timed(
                        lambda: client.push(
                            files=[f"{model}:application/vnd.gpux.model.onnx.v1"],
                            target=oras_target,
                            disable_path_validation=True,
                        )
                    )
                )
                fresh = root / f"pull-home-{round_number}"
                times["gpux pull"].append(
                    timed(lambda: transfer.pull(Store(fresh), gpux_target, insecure=True))
                )
                out = root / f"oras-out-{round_number}"
                times["oras pull"].append(
                    timed(lambda: client.pull(target=oras_target, outdir=str(out)))
                )
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{size_mb:.0f} MB image, local docker-registry on loopback, {args.rounds} rounds (median)"
    )
    for action in ("push", "pull"):
        ours, theirs = medians[f"gpux {action}"], medians[f"oras {action}"]
        verdict = "OK" if ours <= 1.2 * theirs else "OVER"
        print(
            f"  {action}: gpux {ours:6.2f} s ({size_mb / ours:6.0f} MB/s)   "
            f"oras {theirs:6.2f} s ({size_mb / theirs:6.0f} MB/s)   ratio {ours / theirs:.2f}   "
            f"{verdict} (target <= 1.2)"
        )
    print("  both in this process (the gpux command adds its start-up, ~0.3 s)")
    if args.json:
        args.json.write_text(json.dumps({"size_mb": size_mb, "seconds": times}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
