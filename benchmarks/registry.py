"""GPUX push/pull of a 100 MB image against a local registry, and the oras CLI pushing and
pulling the same file to the same registry, in one run.

The registry is Debian's docker-registry on loopback (``make system-deps`` installs it). Each
round pushes to a fresh repository and pulls into a fresh store / folder, so every byte moves;
the tools alternate so all see the same machine. Target: GPUX <= 1.2x oras.

GPUX is timed twice: as the ``gpux push``/``gpux pull`` commands (what a user runs, Python's
start-up included) and as the library calls those commands make (``gpux.distribution.transfer``).
The baseline is the ``oras`` command (``--oras PATH``, else ``oras`` on PATH); without one,
oras-py (the Python client, which checks no digests) stands in, and the output says so.

Both check every pulled blob's sha256. GPUX also fsyncs each blob before it names the image,
so that a crash cannot leave an image with torn files; oras leaves the bytes in the page cache.
The "oras pull + sync" row gives oras that durability.

    uv run python benchmarks/registry.py [--oras PATH] [--megabytes 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
        [sys.executable, "-m", "gpux", *args],
        env={**os.environ, "GPUX_HOME": str(home), "GPUX_NO_PROGRESS": "1"},
        check=True,
        capture_output=True,
    )


def timed(call: Any) -> float:
    # Every step starts with no dirty pages left by the previous one (the registry just
    # wrote 100 MB): GPUX fsyncs what it stores, oras does not, and pending writeback from
    # another step would otherwise land on whichever tool syncs next.
    os.sync()
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


class OrasCommand:
    """The oras CLI, run the way its documentation shows, from the file's folder."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        found = subprocess.run([binary, "version"], capture_output=True, text=True, check=True)
        self.version = found.stdout.splitlines()[0].split(":", 1)[-1].strip()
        self.name = f"oras {self.version} (CLI)"

    def push(self, model: Path, target: str) -> None:
        subprocess.run(
            [
                self.binary,
                "push",
                target,
                f"{model.name}:application/vnd.gpux.model.onnx.v1",
                "--plain-http",
            ],
            cwd=model.parent,
            check=True,
            capture_output=True,
        )

    def pull(self, target: str, out: Path) -> None:
        subprocess.run(
            [self.binary, "pull", target, "-o", str(out), "--plain-http"],
            check=True,
            capture_output=True,
        )


class OrasPy:
    """oras-py, when no oras command is at hand; it checks no digests."""

    def __init__(self, host: str) -> None:
        import oras.client

        self.client = oras.client.OrasClient(hostname=host, insecure=True)
        self.name = f"oras-py {oras.__version__} (no oras command found; checks no digests)"

    def push(self, model: Path, target: str) -> None:
        self.client.push(
            files=[f"{model}:application/vnd.gpux.model.onnx.v1"],
            target=target,
            disable_path_validation=True,
        )

    def pull(self, target: str, out: Path) -> None:
        self.client.pull(target=target, outdir=str(out))


ROWS = (
    "gpux push (command)",
    "gpux push (library)",
    "oras push",
    "gpux pull (command)",
    "gpux pull (library)",
    "oras pull",
    "oras pull + sync",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--oras", help="The oras command (default: oras on PATH).")
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from gpux.distribution import transfer
    from gpux.store import Store

    binary = args.oras or shutil.which("oras")
    with tempfile.TemporaryDirectory(prefix="gpux-bench-registry-") as tmp:
        root = Path(tmp)
        model = generated_models.big(root / "project" / "model.onnx", megabytes=args.megabytes)
        (root / "project" / "GPUXfile").write_text(
            "name: big\nversion: '1.0'\nmodel: ./model.onnx\ninputs:\n  - name: x\n"
        )
        home = root / "home"
        gpux(home, "build", str(root / "project"), "-q", "--no-optimize")
        size_mb = model.stat().st_size / 1e6
        times: dict[str, list[float]] = {row: [] for row in ROWS}
        with running_registry(root / "registry") as registry:
            oras = OrasCommand(binary) if binary else OrasPy(registry.host)
            out = root / "out"
            for n in range(args.rounds):
                target = f"{registry.host}/bench/{{}}{n}:1.0"
                pushes = {
                    "gpux push (command)": lambda t=target.format("gpuxcli"): gpux(
                        home, "push", "big:1.0", t, "--insecure"
                    ),
                    "gpux push (library)": lambda t=target.format("gpux"): transfer.push(
                        Store(home), "big:1.0", t, insecure=True
                    ),
                    "oras push": lambda t=target.format("oras"): oras.push(model, t),
                }
                pulls = {
                    "gpux pull (command)": lambda t=target.format("gpuxcli"): gpux(
                        out, "pull", t, "--insecure"
                    ),
                    "gpux pull (library)": lambda t=target.format("gpux"): transfer.pull(
                        Store(out), t, insecure=True
                    ),
                    "oras pull": lambda t=target.format("oras"): oras.pull(t, out),
                    # The same pull made durable, as GPUX's is (it fsyncs each blob it checked).
                    "oras pull + sync": lambda t=target.format("oras"): (
                        oras.pull(t, out),
                        os.sync(),
                    ),
                }
                # The order rotates every round, so that no tool always follows the same one.
                for steps in (pushes, pulls):
                    names = list(steps)
                    for row in names[n % len(names) :] + names[: n % len(names)]:
                        times[row].append(timed(steps[row]))
                        # Each pull lands in an empty folder, and its copy is gone before the
                        # next step: on this VM, memory the guest has not touched lately costs
                        # ~3 ms per MB to fault in, so a step that needs fresh page cache
                        # would pay for the copies the steps before it kept.
                        shutil.rmtree(out, ignore_errors=True)
                        # The root filesystem here is ext4 mounted with `discard`: freeing a
                        # 100 MB copy queues discards that the next journal commit (the next
                        # fsync) would wait for. Let them finish before the next step.
                        os.sync()
                        time.sleep(0.5)
    medians = {row: statistics.median(values) for row, values in times.items()}
    print(
        f"{size_mb:.0f} MB image, local docker-registry on loopback, {args.rounds} rounds "
        f"(medians); baseline {oras.name}"
    )
    for row in ROWS:
        action = row.split()[1]
        baseline = medians[f"oras {action}"]
        print(
            f"  {row:<22} {medians[row]:6.3f} s ({size_mb / medians[row]:5.0f} MB/s)   "
            f"{medians[row] / baseline:5.2f}x oras {action}"
        )
    for action in ("push", "pull"):
        ours, theirs = medians[f"gpux {action} (command)"], medians[f"oras {action}"]
        verdict = "OK" if ours <= 1.2 * theirs else "OVER"
        print(f"  gpux {action} / oras {action}: {ours / theirs:.2f}  {verdict} (target <= 1.2)")
    if args.json:
        body = {"size_mb": size_mb, "baseline": oras.name, "seconds": times}
        args.json.write_text(json.dumps(body, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
