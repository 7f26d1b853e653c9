"""Every backend available here on one model, each as a ratio to the CPU backend, with a plot.

    python benchmarks/backends.py --model PATH.onnx [--runs 200] [--plot out.png] [--json out.json]

Each backend is loaded through ``gpux.load(..., backend=NAME)`` (so selection, placement proof and
warm-up are GPUX's own), then timed on the same generated inputs, in blocks with rotating order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.gpu_latency import timed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("GPUX_HOME", tempfile.mkdtemp(prefix="gpux-backends-"))

    import gpux
    from gpux.builder.smoke import generate_inputs
    from gpux.errors import GPUXError
    from gpux.runtime.selection import plan

    project = Path(tempfile.mkdtemp(prefix="gpux-backends-project-"))
    (project / args.model.name).symlink_to(args.model.resolve())
    (project / "GPUXfile").write_text(f"model: ./{args.model.name}\n")
    backends = [c.backend for c in plan("auto").candidates]
    if "cpu" not in backends:
        backends.append("cpu")
    models: dict[str, Any] = {}
    for backend in backends:
        try:
            models[backend] = gpux.load(project, backend=backend)
        except GPUXError as exc:
            print(f"{backend}: {exc.message}")
    feed = generate_inputs(next(iter(models.values())).inputs)
    medians = timed({name: (lambda m=m: m.run(feed)) for name, m in models.items()}, args.runs)
    cpu = medians["cpu"]
    rows = [
        {
            "backend": name,
            "ms": round(ms, 3),
            "speedup_vs_cpu": round(cpu / ms, 2),
            "device": models[name].placement.device,
        }
        for name, ms in sorted(medians.items(), key=lambda item: item[1])
    ]
    print(
        f"model {args.model.name}, inputs "
        + ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())
    )
    print(f"{'backend':<10} {'median ms':>10} {'x CPU':>8}  device")
    for row in rows:
        print(
            f"{row['backend']:<10} {row['ms']:>10.3f} {row['speedup_vs_cpu']:>8.2f}  "
            f"{row['device']}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot")
            return 0
        figure, axis = plt.subplots(figsize=(6, 3))
        axis.barh([r["backend"] for r in rows], [r["speedup_vs_cpu"] for r in rows])
        axis.set_xlabel("speed-up over the CPU backend (x)")
        axis.set_title(f"{args.model.name}: median latency per backend")
        for index, row in enumerate(rows):
            axis.text(row["speedup_vs_cpu"], index, f" {row['ms']:.2f} ms", va="center")
        figure.tight_layout()
        figure.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
