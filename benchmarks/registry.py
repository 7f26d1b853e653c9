"""GPUX push/pull (``gpux.distribution.transfer``, what ``gpux push``/``gpux pull`` run) of a 100 MB image against a local registry, and oras (oras-py)
pushing and pulling the same files to the same registry, in one run.

The registry is Debian's docker-registry on loopback (``make system-deps`` installs it). Each
round pushes to a fresh repository and pulls into a fresh store / folder, so every byte moves;
the two tools alternate so both see the same machine. Target: GPUX <= 1.2x oras.

GPUX does more per byte than oras-py: it checks every pulled blob's sha256 and fsyncs it before
naming the image; oras-py writes the bytes as they come. The oras CLI (oras-go) does check
digests, so pulls are also compared with oras-py's followed by that check, and with oras-py's
followed by a sync (GPUX's durability). The oras CLI itself is not used: it is published on
GitHub, which this machine cannot reach.

    uv run python benchmarks/registry.py [--megabytes 100] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
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


def verify(files: list[str]) -> None:
    """What a careful oras-py user adds: each pulled file's sha256 (the oras CLI does it)."""
    for name in files:
        digest = hashlib.sha256()
        with open(name, "rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)


def timed(call: Any) -> float:
    # Every step starts with no dirty pages left by the previous one (the registry just
    # wrote 100 MB): GPUX fsyncs what it stores, oras does not, and pending writeback from
    # another step would otherwise land on whichever tool syncs next.
    os.sync()
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
            k: []
            for k in (
                "gpux push",
                "oras push",
                "gpux pull",
                "oras pull",
                "oras pull + verify",
                "oras pull + sync",
            )
        }
        with running_registry(root / "registry") as registry:
            client = oras.client.OrasClient(hostname=registry.host, insecure=True)
            for round_number in range(args.rounds):
                gpux_target = f"{registry.host}/bench/gpux{round_number}:1.0"
                oras_target = f"{registry.host}/bench/oras{round_number}:1.0"
                times["gpux push"].append(
                    timed(
                        lambda t=gpux_target: transfer.push(
                            Store(home), "big:1.0", t, insecure=True
                        )
                    )
                )
                times["oras push"].append(
                    timed(
                        lambda t=oras_target: client.push(
                            files=[f"{model}:application/vnd.gpux.model.onnx.v1"],
                            target=t,
                            disable_path_validation=True,
                        )
                    )
                )
                fresh = root / f"pull-home-{round_number}"
                times["gpux pull"].append(
                    timed(lambda h=fresh, t=gpux_target: transfer.pull(Store(h), t, insecure=True))
                )
                out = root / f"oras-out-{round_number}"
                times["oras pull"].append(
                    timed(lambda t=oras_target, o=out: client.pull(target=t, outdir=str(o)))
                )
                # The oras CLI (oras-go) checks each blob's digest while it pulls; oras-py does
                # not. This row adds that check, so the baseline gives GPUX's guarantee.
                checked = root / f"oras-checked-{round_number}"
                times["oras pull + verify"].append(
                    timed(
                        lambda t=oras_target, o=checked: verify(
                            client.pull(target=t, outdir=str(o))
                        )
                    )
                )
                # The same pull made durable, as GPUX's is (it fsyncs each blob it verified).
                synced = root / f"oras-synced-{round_number}"
                times["oras pull + sync"].append(
                    timed(
                        lambda t=oras_target, o=synced: (
                            client.pull(target=t, outdir=str(o)),
                            os.sync(),
                        )
                    )
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
    for baseline in ("oras pull + verify", "oras pull + sync"):
        ours, theirs = medians["gpux pull"], medians[baseline]
        verdict = "OK" if ours <= 1.2 * theirs else "OVER"
        print(
            f"  pull vs {baseline}: gpux {ours:.2f} s, oras {theirs:.2f} s, "
            f"ratio {ours / theirs:.2f}   {verdict} (target <= 1.2)"
        )
    print("  both in this process (the gpux command adds its start-up, ~0.3 s)")
    if args.json:
        args.json.write_text(json.dumps({"size_mb": size_mb, "seconds": times}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
