"""The ``fluoden`` command line (typer): thin wrappers over the library functions."""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fluoden_batch import __version__
from fluoden_batch.errors import FluodenError
from fluoden_batch.segment_cli import segment_command
from fluoden_batch.train.cli import train_command

app = typer.Typer(
    name="fluoden",
    help="Denoise large fluorescence microscopy datasets (Zarr / OME-Zarr / TIFF) in batch "
    "with Dask and DnCNN. Start with `fluoden demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List and inspect denoising models (shipped and your own).")
app.add_typer(models_app, name="models")
app.command("segment")(segment_command)
app.command("train")(train_command)
console = Console(stderr=True)
out = Console()


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@contextlib.contextmanager
def _errors() -> Any:
    """Turn the project's errors into one readable line and a non-zero exit."""
    try:
        yield
    except FluodenError as exc:
        raise _fail(str(exc)) from None


def _sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _version(value: bool) -> None:
    if value:
        out.print(f"fluoden-batch {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Batch denoising of fluorescence microscopy data."""


def run_denoise(**flags: Any) -> Any:
    """Plan, run on a Dask cluster with a progress bar, print the summary; returns the result."""
    from distributed import performance_report

    from fluoden_batch.compute import dask_client
    from fluoden_batch.config import build_config
    from fluoden_batch.deploy import gpu_resources, load_profile
    from fluoden_batch.pipeline import execute, plan

    config_file = flags.pop("config", None)
    cfg = build_config(config_file, **flags)
    p = plan(cfg)
    where = "resuming" if p.resumed else "writing"
    console.print(
        f"{where} [bold]{cfg.output}[/]: {len(p.blocks)} blocks of {p.source.shape} "
        f"{p.source.dtype} ({p.source.meta.axes}), {len(p.blocks) - len(p.pending)} already done"
    )
    if p.stray_removed:
        console.print(f"removed {p.stray_removed} temporary files left by an interrupted run")
    for note in p.notes:
        console.print(note.replace("warning:", "[yellow]warning:[/]", 1), highlight=False)
    if not p.pending:
        from fluoden_batch.pipeline import finish

        return finish(p, 0.0, {})
    resources = gpu_resources(load_profile(cfg.profile)) if cfg.profile else None
    with dask_client(
        cfg.scheduler,
        cfg.workers,
        cfg.threads_per_worker,
        cfg.memory_limit,
        cfg.dashboard_address,
        profile=cfg.profile,
        tls=cfg.tls_option,
    ) as client:
        console.print(f"Dask dashboard: {client.dashboard_link}")
        report = (
            performance_report(filename=str(cfg.performance_report))
            if cfg.performance_report
            else contextlib.nullcontext()
        )
        columns = (
            TextColumn("denoising"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("blocks"),
            TimeRemainingColumn(),
        )
        with report, Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(
                "blocks", total=len(p.blocks), completed=len(p.blocks) - len(p.pending)
            )
            return execute(
                p,
                client,
                on_block=lambda done, total: bar.update(task, completed=done),
                resources=resources,
            )


def print_summary(result: Any) -> None:
    """Print the run's summary table to stdout."""
    from fluoden_batch.report import summary_rows

    table = Table(title=f"fluoden: {result.output}", show_header=False)
    for label, value in summary_rows(result.summary):
        table.add_row(label, value)
    table.add_row("metrics table", str(result.output / "metrics.parquet"))
    out.print(table)


def _interrupted(output: Path) -> typer.Exit:
    console.print(
        f"[yellow]interrupted.[/] Finished blocks are kept in {output}; run the same command "
        "again to finish the rest."
    )
    return typer.Exit(130)


@app.command()
def denoise(
    input: Annotated[
        Path, typer.Argument(help="Input: Zarr array, OME-Zarr image (NGFF 0.4/0.5) or TIFF.")
    ],
    output: Annotated[
        Path, typer.Argument(help="Output OME-Zarr image (created; or resumed if it exists).")
    ],
    model: Annotated[
        str | None, typer.Option(help="Shipped model name or path to a .safetensors file.")
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="whole (default): the model sees normalised raw intensities; vst: "
            "generalized Anscombe transform with one (a, b) per channel estimated from the "
            "data, the model, then the exact unbiased inverse."
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(help="Clean array of the same shape: adds PSNR/SSIM to the metrics."),
    ] = None,
    data_range: Annotated[
        float | None,
        typer.Option(help="Peak-to-peak range for PSNR/SSIM [default: the reference's range]."),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(help="Output dtype: same|uint8|uint16|float32|float64 [default: same]."),
    ] = None,
    chunks: Annotated[
        str | None, typer.Option(help="Output chunk size in Y/X as 'Y,X' [default: the input's].")
    ] = None,
    block_min: Annotated[
        int | None,
        typer.Option(
            help="Smallest block (task) size in Y/X, in pixels; whole chunks are grouped."
        ),
    ] = None,
    tile: Annotated[
        int | None, typer.Option(help="Forward-pass tile size in pixels [default: 384].")
    ] = None,
    ngff_version: Annotated[
        str | None, typer.Option(help="Output NGFF version: 0.5 (default) or 0.4 (Fiji).")
    ] = None,
    axes: Annotated[
        str | None, typer.Option(help="Axis names for inputs without metadata, e.g. 'cyx'.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local worker processes [default: one per core].")
    ] = None,
    threads_per_worker: Annotated[
        int | None, typer.Option(help="Threads (and torch threads) per worker [default: 1].")
    ] = None,
    memory_limit: Annotated[
        str | None, typer.Option(help="Memory limit per local worker, e.g. '4GiB'.")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Address of a running Dask scheduler to use instead of a local cluster."),
    ] = None,
    dashboard_address: Annotated[
        str | None, typer.Option(help="Dashboard address of the local cluster [127.0.0.1:8787].")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Torch device: auto|cpu|cuda|cuda:N [default: auto].")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="fp32 (default), or bf16/fp16 autocast on CUDA (faster, less exact)."),
    ] = None,
    performance_report: Annotated[
        Path | None, typer.Option(help="Write a Dask performance report (HTML) here.")
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option(
            help="Deploy profile (YAML) starting a local, local-cuda, SLURM or Kubernetes "
            "Dask cluster; see deploy/."
        ),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option("--tls", help="Encrypt Dask traffic with temporary certificates."),
    ] = False,
    tls_dir: Annotated[
        Path | None,
        typer.Option(help="Directory with ca.pem, cert.pem, key.pem for TLS between all parts."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="With --profile: print the job script / cluster spec and stop."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an OUT written with other parameters.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML or YAML file with any of these options (flags override it)."),
    ] = None,
) -> None:
    """Denoise every Y/X plane of INPUT into the OME-Zarr OUTPUT.

    Work is split into blocks aligned to the output chunks; each Dask task reads its block
    with a halo, denoises it and writes exactly its own chunks, then a completion marker.
    Rerunning the same command resumes: finished blocks are skipped. Per-block metrics
    go to OUTPUT/metrics.parquet and a summary into OUTPUT's attributes.
    """
    _sigterm_as_interrupt()
    with _errors():
        if dry_run:
            _print_dry_run(profile, workers, tls_dir or (True if tls else None))
            return
        chunk_tuple = _parse_chunks(chunks) if chunks else None
        try:
            result = run_denoise(
                input=input,
                output=output,
                model=model,
                protocol=protocol,
                reference=reference,
                data_range=data_range,
                dtype=dtype,
                chunks=chunk_tuple,
                block_min=block_min,
                tile=tile,
                ngff_version=ngff_version,
                axes=axes,
                workers=workers,
                threads_per_worker=threads_per_worker,
                memory_limit=memory_limit,
                scheduler=scheduler,
                dashboard_address=dashboard_address,
                device=device,
                precision=precision,
                performance_report=performance_report,
                overwrite=overwrite or None,
                config=config,
                profile=profile,
                tls=tls or None,
                tls_dir=tls_dir,
            )
        except KeyboardInterrupt:
            raise _interrupted(output) from None
        print_summary(result)


def _print_dry_run(profile: Path | None, workers: int | None, tls: bool | Path | None) -> None:
    from fluoden_batch.deploy import dry_run, load_profile
    from fluoden_batch.security import make_security

    if profile is None:
        raise FluodenError("--dry-run needs --profile")
    out.print(
        dry_run(load_profile(profile), workers, make_security(tls)), highlight=False, soft_wrap=True
    )


def _parse_chunks(text: str) -> tuple[int, int]:
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise FluodenError(f"--chunks {text!r}: expected two integers 'Y,X'") from None
    return y, x


@app.command()
def demo(
    folder: Annotated[
        Path | None,
        typer.Option(help="Where to write the demo data and output [default: a temp folder]."),
    ] = None,
    planes: Annotated[int, typer.Option(help="Number of Z planes.")] = 3,
    size: Annotated[int, typer.Option(help="Plane size in pixels (Y = X).")] = 2048,
    workers: Annotated[int | None, typer.Option(help="Local worker processes.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name or weights path.")] = None,
) -> None:
    """Make a synthetic noisy dataset with its clean reference, denoise it, print the scores.

    The data are fluorescence-like cells and filaments (uint16, 12-bit range) with
    Poisson-Gaussian noise (a=32, b=400), written as OME-Zarr; nothing is downloaded.
    """
    from fluoden_batch.demo import make_demo_dataset

    _sigterm_as_interrupt()
    with _errors():
        base = folder or Path(tempfile.mkdtemp(prefix="fluoden-demo-"))
        console.print(f"writing the demo dataset ({planes} x {size} x {size} uint16) to {base}")
        noisy, clean = make_demo_dataset(base, planes=planes, size=size)
        output = base / "denoised.zarr"
        try:
            result = run_denoise(
                input=noisy,
                output=output,
                reference=clean,
                workers=workers,
                model=model,
                overwrite=True,
            )
        except KeyboardInterrupt:
            raise _interrupted(output) from None
        print_summary(result)
        out.print(f"denoised image: {output}\nnoisy input: {noisy}\nclean reference: {clean}")
        out.print(f"view it: napari --plugin napari-ome-zarr {output}")


@app.command()
def ingest(
    tiff: Annotated[Path, typer.Argument(help="TIFF or OME-TIFF stack.")],
    output: Annotated[Path, typer.Argument(help="New OME-Zarr image to write.")],
    chunks: Annotated[str, typer.Option(help="Chunk size in Y/X as 'Y,X'.")] = "512,512",
    ngff_version: Annotated[str, typer.Option(help="NGFF version: 0.5 or 0.4.")] = "0.5",
    axes: Annotated[
        str | None, typer.Option(help="Axis names if the TIFF has none usable, e.g. 'zyx'.")
    ] = None,
) -> None:
    """Convert a TIFF / OME-TIFF stack to an OME-Zarr image (plane by plane)."""
    from fluoden_batch.io.ingest import ingest as do_ingest

    with _errors():
        if ngff_version not in ("0.4", "0.5"):
            raise FluodenError(f"--ngff-version {ngff_version!r}: use 0.4 or 0.5")
        path = do_ingest(
            tiff, output, chunks=_parse_chunks(chunks), ngff_version=ngff_version, axes=axes
        )
        out.print(f"wrote {path}")


@app.command("estimate-noise")
def estimate_noise(
    input: Annotated[
        Path, typer.Argument(help="Zarr array, OME-Zarr image (NGFF 0.4/0.5) or TIFF.")
    ],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON (one object per plane) to stdout only.")
    ] = False,
    axes: Annotated[
        str | None, typer.Option(help="Axis names for inputs without metadata, e.g. 'cyx'.")
    ] = None,
    max_blocks: Annotated[
        int,
        typer.Option(
            min=1, help="Regions (up to 2048 x 2048 px) estimated per plane, spread over it."
        ),
    ] = 8,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Local Dask worker processes; 0 runs here without Dask (default: here for "
            "up to 16 regions, else one worker per core).",
        ),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a running Dask scheduler to use.")
    ] = None,
) -> None:
    """Estimate Poisson-Gaussian noise (a, b) of every Y/X plane: Var(z | y) = a*y + b.

    a is the gain (data units per photo-electron), b the variance at zero signal
    (negative when the data carry an offset). Each plane is cut into regions of at most
    2048 x 2048 pixels; up to --max-blocks of them are estimated (one Dask task each) and
    their level sets pooled into one fit per plane.
    """
    import json

    from fluoden_batch.io.source import open_image
    from fluoden_batch.noise.planes import estimate_planes, plan_tasks

    with _errors():
        source = open_image(input, axes)
        n_tasks = len(plan_tasks(source.shape, max_blocks))
        local = scheduler is None and (workers == 0 or (workers is None and n_tasks <= 16))
        if local:
            rows = estimate_planes(source, None, max_blocks)
        else:
            from fluoden_batch.compute import dask_client

            with dask_client(scheduler, workers or None, dashboard_address="127.0.0.1:0") as c:
                console.print(f"{n_tasks} regions on Dask; dashboard: {c.dashboard_link}")
                rows = estimate_planes(source, c, max_blocks)
        if json_output:
            typer.echo(json.dumps(rows, allow_nan=False))
            return
        _print_noise_table(str(input), source.meta.axes, rows)


def _print_noise_table(title: str, axes: str, rows: list[dict[str, Any]]) -> None:
    def num(v: float | None, fmt: str = "{:.4g}") -> str:
        return "-" if v is None else fmt.format(v)

    lead = list(axes[:-2])
    table = Table(*lead, "a", "b", "a_std", "b_std", "n_levels", "blocks", title=title)
    for r in rows:
        cells = [str(r[a]) for a in lead]
        if r["error"] is not None:
            table.add_row(*cells, "-", "-", "-", "-", "0", f"0/{r['blocks_failed']}")
            continue
        used = f"{r['blocks']}/{r['blocks'] + r['blocks_failed']}"
        table.add_row(
            *cells, num(r["a"]), num(r["b"]), num(r["a_std"]), num(r["b_std"]),
            str(r["n_levels"]), used,
        )  # fmt: skip
    out.print(table)
    for r in rows:
        if r["error"] is not None:
            where = ", ".join(f"{a}={r[a]}" for a in lead) or "plane"
            console.print(f"[yellow]{where}:[/] no estimate ({r['error']})", highlight=False)


@app.command()
def info(path: Annotated[Path, typer.Argument(help="Array, OME-Zarr image or TIFF.")]) -> None:
    """Show shape, dtype, chunks, axes, scales and any fluoden provenance of an image."""
    from fluoden_batch.io.source import open_image
    from fluoden_batch.io.store import read_provenance

    with _errors():
        src = open_image(path, dtypes=None)
        table = Table(title=str(path), show_header=False)
        table.add_row("shape", str(src.shape))
        table.add_row("dtype", str(src.dtype))
        table.add_row("chunks", str(src.chunks))
        table.add_row("axes", src.meta.axes)
        table.add_row("scale", str(src.meta.scale))
        table.add_row("units", str(src.meta.units or "-"))
        table.add_row("NGFF version", str(src.ngff_version or "-"))
        prov = read_provenance(Path(path))
        if prov:
            table.add_row(
                "written by", f"fluoden-batch {prov.get('version')} ({prov.get('created')})"
            )
            if "model" in prov:
                model = prov["model"]
                table.add_row("model", f"{model['name']} {model['digest'][:19]}")
            table.add_row("complete", str(prov.get("complete")))
        out.print(table)


@models_app.command("list")
def models_list() -> None:
    """List the shipped models."""
    from fluoden_batch.models.weights import read_metadata, shipped_models

    with _errors():
        table = Table("name", "architecture", "protocol", "description")
        for name, path in shipped_models().items():
            m = read_metadata(path)
            arch = f"DnCNN {m.architecture.depth}x{m.architecture.width}"
            table.add_row(name, arch, m.protocol, m.description)
        out.print(table)


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument(help="Shipped model name or .safetensors path.")],
) -> None:
    """Print a model's metadata (architecture, normalisation, training) as JSON."""
    from fluoden_batch.models.weights import file_digest, read_metadata, resolve_weights

    with _errors():
        path = resolve_weights(model)
        meta = read_metadata(path)
        out.print_json(data={"path": str(path), "digest": file_digest(path), **meta.model_dump()})


def main() -> None:
    """Console-script entry point."""
    app(prog_name="fluoden")


if __name__ == "__main__":
    sys.exit(main())
