"""``gpux run``: load an image (or a project, or an .onnx file) and run one request on it.

The command's code lives in this package: this module registers the command and picks the
path; :mod:`.pipeline` runs a model with a pipeline on the inputs people have (text, image
and audio files, folders, .jsonl), :mod:`.tensors` runs tensors given as JSON or .npy, and
:mod:`.draw` draws detections for ``--draw``. Only ``typer`` is imported at start-up: the
paths import the model code when the command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gpux.cli.options import BACKENDS, GPUS_HELP, check_backend, check_gpus


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        target: str = typer.Argument(..., help="Image name[:tag], digest, project path or .onnx."),
        inputs: list[str] = typer.Option(
            [],
            "-i",
            "--input",
            help="NAME=VALUE (JSON), NAME=@file.npy|.json, or @request.json. Repeatable. "
            "A model with one input also takes a bare VALUE or @file.npy. "
            "Without --input, a JSON request is read from stdin.",
        ),
        output: Path | None = typer.Option(
            None,
            "-o",
            "--output",
            help="Also write outputs to a .json, .npy or .npz file (with a pipeline: the "
            "results to .json/.jsonl, the raw tensors to .npz).",
        ),
        full: bool = typer.Option(False, "--full", help="Print every value of large tensors."),
        backend: str | None = typer.Option(None, "--backend", help=f"Override ({BACKENDS})."),
        gpus: str | None = typer.Option(None, "--gpus", help=GPUS_HELP),
        raw: bool = typer.Option(
            False,
            "--raw",
            help="With a pipeline: the raw output tensors too, next to the results "
            "(summarised; complete with --full; -o out.npz writes them as arrays).",
        ),
        interactive: bool = typer.Option(
            False,
            "-I",
            "--interactive",
            help="Read one input per line, print one result per line (a generative model: a "
            "chat that keeps its history).",
        ),
        batch_size: int = typer.Option(
            16, "--batch-size", min=1, help="Items per model call when many inputs are given."
        ),
        trust_code: bool = typer.Option(
            False,
            "--trust-code",
            help="Run the handler code of an image not built on this machine (pulled, loaded).",
        ),
        draw: Path | None = typer.Option(
            None,
            "--draw",
            help="With a detection pipeline and one image: draw the boxes found on it and "
            "save it to this image file (.png, .jpg, ...).",
        ),
        as_json: bool = typer.Option(
            False,
            "--json",
            help="Generative models: print one JSON object (text, token counts, time to first "
            "token, tokens/s) instead of streaming the text.",
        ),
        max_new_tokens: int | None = typer.Option(
            None, "--max-new-tokens", min=1, help="Generative models: tokens generated at most."
        ),
        temperature: float | None = typer.Option(
            None, "--temperature", min=0.0, help="Generative models: 0 is greedy; above 0 samples."
        ),
        top_p: float | None = typer.Option(None, "--top-p", help="Generative models: nucleus."),
        top_k: int | None = typer.Option(None, "--top-k", help="Generative models: top-k."),
        seed: int | None = typer.Option(
            None, "--seed", min=0, help="Generative models: seed of the sampler."
        ),
        stop: list[str] = typer.Option(
            [], "--stop", help="Generative models: end the output at this text. Repeatable."
        ),
        system: str | None = typer.Option(
            None, "--system", help="Generative chat models: a system message first."
        ),
        no_chat: bool = typer.Option(
            False,
            "--no-chat",
            help="Generative models: continue the input as text, without the chat template.",
        ),
        language: str | None = typer.Option(
            None,
            "--language",
            help="Speech models: the spoken language (ISO 639-1: en, de ...); default: detected.",
        ),
        task: str | None = typer.Option(
            None, "--task", help="Speech models: transcribe (default) or translate (to English)."
        ),
    ) -> None:
        """Run inference and print the results as JSON (JSONL for many inputs).

        With a pipeline in the GPUXfile, inputs are what people have: text, image or audio
        files, folders of them, .jsonl files; without one, tensors as JSON or .npy. A
        generative model (an LLM) takes a prompt and writes its answer as it is decoded."""
        backend = check_backend(backend)
        gpus = check_gpus(gpus)
        from gpux.api import load, looks_like_path

        reporter = None
        if looks_like_path(target) and not target.endswith(".onnx"):
            from gpux.cli.progress import RichReporter

            reporter = RichReporter(quiet=True)
        model = load(
            target,
            backend=backend,
            warmup=False,
            reporter=reporter,
            trust_code=trust_code,
            gpus=gpus,
        )
        reason = model.placement.fallback_reason
        if reason:
            from gpux import notes

            if notes.first_time(reason):  # a fact about the machine: said once, kept in JSON
                # Plain text: importing Rich for one line would cost every run ~60 ms.
                sys.stderr.write(
                    f"note: running on {model.placement.backend}; better backends were passed "
                    f"over: {reason} {notes.ONCE}\n"
                )
        from gpux.runtime.generative import GenerativeModel
        from gpux.runtime.speech import SpeechModel

        speech_flags = {"--language": language, "--task": task}
        if not isinstance(model, SpeechModel) and any(speech_flags.values()):
            from gpux.errors import UsageError

            model.close()
            given_speech = [flag for flag, value in speech_flags.items() if value]
            raise UsageError(
                f"{', '.join(given_speech)}: for speech models only ('{target}' is not one)",
                "see 'gpux inspect' for what the model takes",
            )
        if isinstance(model, SpeechModel):
            from gpux.cli.run.transcribe import run_speech

            text_flags = {
                "--output": output,
                "--raw": raw,
                "--full": full,
                "--draw": draw,
                "--interactive": interactive,
                "--stop": stop,
                "--system": system,
                "--no-chat": no_chat,
            }
            refused = [flag for flag, value in text_flags.items() if value]
            if refused:
                from gpux.errors import UsageError

                model.close()
                raise UsageError(
                    f"{', '.join(refused)}: not for a speech model ('{target}' takes audio "
                    "and answers in text)",
                    "use --json for the text with its segments, token counts and timings",
                )
            settings = {
                "language": language,
                "task": task,
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "top_k": top_k,
                "seed": seed,
            }
            with model:
                run_speech(model, inputs, as_json, settings)
            return
        if isinstance(model, GenerativeModel):
            from gpux.cli.run.generate import GenerateOptions, run_generative

            tensor_flags = {"--output": output, "--raw": raw, "--full": full, "--draw": draw}
            refused = [flag for flag, value in tensor_flags.items() if value]
            if refused:
                from gpux.errors import UsageError

                model.close()
                raise UsageError(
                    f"{', '.join(refused)}: not for a generative model ('{target}' takes a "
                    "prompt and answers in text)",
                    "use --json for the answer with its token counts and timings",
                )

            overrides = {
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "top_k": top_k,
                "seed": seed,
                "stop": stop or None,
            }
            options = GenerateOptions(as_json, not no_chat, system, overrides)
            with model:
                run_generative(model, inputs, interactive, options)
            return
        generation_flags = {
            "--max-new-tokens": max_new_tokens,
            "--temperature": temperature,
            "--top-p": top_p,
            "--top-k": top_k,
            "--seed": seed,
            "--stop": stop or None,
            "--system": system,
            "--no-chat": no_chat or None,
        }
        given = [flag for flag, value in generation_flags.items() if value is not None]
        if given:
            from gpux.errors import UsageError

            model.close()
            raise UsageError(
                f"{', '.join(given)}: for generative models only ('{target}' takes "
                f"{'inputs through its pipeline' if model.pipeline else 'tensors'})",
                "see 'gpux inspect' for what the model takes",
            )
        if model.pipeline is not None:
            from gpux.cli.inputs import skips_pipeline

            if not skips_pipeline(inputs, model):
                from gpux.cli.run.pipeline import run_pipeline

                run_pipeline(model, inputs, output, raw, interactive, batch_size, full, draw)
                return
        from gpux.cli.run.tensors import run_tensors

        run_tensors(model, target, inputs, output, full, interactive, draw)
