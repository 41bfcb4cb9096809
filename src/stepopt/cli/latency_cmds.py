"""``stepopt latency fit`` and ``stepopt latency plot``: presets from Vidur profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stepopt.cli.common import command, console, figure_file, output_file, print_json
from stepopt.cli.core import latency_app
from stepopt.errors import InputError


def cmd_fit(
    profile_dir: Annotated[
        Path, typer.Argument(help="Vidur's data/profiling folder (compute/, network/, a100/).")
    ],
    gpu: Annotated[str, typer.Option(help="GPU: a100 or h100.")],
    model: Annotated[str, typer.Option(help="llama-2-7b, llama-3-8b, codellama-34b, llama-2-70b.")],
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Preset JSON file to write.")],
    max_segments: Annotated[int, typer.Option(help="Most segments of the token curve.")] = 16,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fit a latency preset to one GPU, model and TP degree.

    Reads one combination of a Vidur profiling folder and writes a preset file.
    """
    from stepopt.latency.build import fit_combo, preset_document, write_document

    if not 1 <= max_segments <= 1024:
        raise InputError("--max-segments", "must be in 1..1024", max_segments)
    if not 1 <= tp <= 1024:
        raise InputError("--tp", "must be in 1..1024", tp)
    output_file(output, "--output")
    fitter = fit_combo(profile_dir, gpu, model, tp, max_segments=max_segments)
    doc = preset_document(fitter)
    write_document(doc, output)
    summary = {
        "preset": doc["name"],
        "output": str(output),
        "token_segments": fitter.report_.n_segments,
        "fit_mape_pct": round(fitter.holdout_mape_pct_, 3),
        "attention": fitter.attention_,
        "decode_context_ps": doc["decode_context_ps"],
    }
    if json_out:
        print_json(summary)
    else:
        console.print(
            f"wrote {output}: {summary['token_segments']} token segments, held-out MAPE "
            f"{summary['fit_mape_pct']:.2f} %, attention {summary['attention']}"
        )


def _load_model(preset: str):
    from stepopt.io import load_latency_model

    return load_latency_model(preset, field=preset)


def cmd_plot(
    preset: Annotated[
        str, typer.Argument(help="Preset name (e.g. a100/codellama-34b/tp2) or JSON.")
    ],
    data: Annotated[Path, typer.Option("--data", help="Vidur's data/profiling folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Figure file (PNG, PDF, SVG).")],
) -> None:
    """Plot a preset against the points it was fitted on."""
    from stepopt.latency.plot import plot_fit
    from stepopt.latency.profiles import load_profile

    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
    except ImportError:
        pass  # plot_fit raises the one-line missing-extra error
    figure_file(output, "--output")
    model = _load_model(preset)
    meta = model.meta
    missing = [k for k in ("gpu", "model", "tp") if k not in meta]
    if missing:
        raise InputError(
            "preset", f"meta has no {missing[0]!r}: cannot tell which profile to plot", preset
        )
    profile = load_profile(data, str(meta["gpu"]), str(meta["model"]), int(meta["tp"]))
    fig = plot_fit(model, profile)
    fig.savefig(output, dpi=120)
    console.print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    command(latency_app, "fit")(cmd_fit)
    command(latency_app, "plot")(cmd_plot)
