"""Shared pieces of the benchmark suite: data, denoising protocols, scoring, reports, plots.

Imported by the ``exp*.py`` modules next to it (``benchmarks/run_suite.py`` puts this
folder and ``benchmarks/`` on ``sys.path``, so the older scripts there are reused as
modules: ``eval_fmd``, ``throughput``, ``clustering_speed``, ``train_fmd``, ``machine``).

Data: ``$FLUODEN_DATA`` or ``../shared/data`` next to the checkout (``fmd_dev``,
``w2s_train``); every real-data part skips with a message when its folder is absent.
Synthetic data: :func:`fluoden_batch.demo.clean_plane` (12-bit scale, 0..4095) under
Poisson-Gaussian noise (:func:`fluoden_batch.noise.simulate`, clipped to 0..4095).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
QUICK_RESULTS = RESULTS / "quick"
DATA = Path(os.environ.get("FLUODEN_DATA", ROOT.parent / "shared" / "data"))
FMD = DATA / "fmd_dev"
W2S = DATA / "w2s_train"
LEVELS = ("raw", "avg2", "avg4", "avg8", "avg16")
FMD_PEAK = 255.0
SYNTH_PEAK = 4095.0


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What every experiment gets from the runner."""

    quick: bool
    out: Path
    model: str = "dncnn-small"
    masked_model: str = "dncnn-small-masked"
    baseline_models: tuple[str, ...] = ("dncnn-small",)
    k: int = 3
    mask_sigma: float = 2.0
    nlm_h: float = 0.8
    steps: int = 1500
    threads: int = 1
    n2v_model: str | None = None
    command: str = ""
    messages: list[str] = field(default_factory=list)

    def say(self, text: str) -> str:
        """Print ``text`` now and keep it for the summary (skips, warnings)."""
        print(text, flush=True)
        self.messages.append(text)
        return text


def fmd_missing() -> str | None:
    """The skip message when the FMD folder is absent, else None."""
    if (FMD / "gt").is_dir() and (FMD / "raw").is_dir():
        return None
    return f"Real data skipped: {FMD} not found (set FLUODEN_DATA to the folder holding fmd_dev)."


def w2s_missing() -> str | None:
    if (W2S / "avg1").is_dir():
        return None
    return f"Real data skipped: {W2S} not found (set FLUODEN_DATA to the folder holding w2s_train)."


@cache
def machine_line(threads: int) -> str:
    """CPU, OS and library versions (benchmarks/machine.py) plus the torch thread count."""
    import skimage
    import sklearn
    import torch
    from machine import describe

    libs = {
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "scikit-image": skimage.__version__,
    }
    return describe(libs, f"torch threads {threads}")


def short_machine() -> str:
    """A few words for plot titles."""
    text = machine_line(1).split(";")
    return f"{text[0].strip()}, {os.cpu_count()} CPUs"


# ---------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Image:
    """One noisy plane with its clean reference, in data units (float64)."""

    key: str  # unique, e.g. "fmd/raw/Confocal_MICE_1"
    kind: str  # FMD sample type, or "synthetic"
    level: str  # FMD level, or "a=..,b=.." for synthetic
    noisy: np.ndarray
    clean: np.ndarray
    peak: float  # data_range of PSNR/SSIM and the clip range 0..peak

    @property
    def mpx(self) -> float:
        return self.noisy.size / 1e6


def _read(path: Path) -> np.ndarray:
    from skimage import io

    return io.imread(path).astype(np.float64)


def fmd_types() -> list[str]:
    return sorted({p.stem.rsplit("_", 1)[0] for p in (FMD / "raw").glob("*.png")})


def fmd_images(
    level: str,
    types: Sequence[str] | None = None,
    per_type: int | None = None,
    crop: int | None = None,
) -> list[Image]:
    """FMD ``level`` images (captures 1..``per_type`` of each type) with their gt.

    ``crop`` keeps the top-left ``crop`` x ``crop`` pixels (quick runs).
    """
    out = []
    for kind in types or fmd_types():
        paths = sorted((FMD / level).glob(f"{kind}_*.png"))[:per_type]
        for path in paths:
            noisy, clean = _read(path), _read(FMD / "gt" / path.name)
            if crop:
                noisy, clean = noisy[:crop, :crop], clean[:crop, :crop]
            out.append(Image(f"fmd/{level}/{path.stem}", kind, level, noisy, clean, FMD_PEAK))
    return out


def synthetic_image(a: float, b: float, seed: int = 0, size: int = 512) -> Image:
    """Demo-style clean plane (0..4095) under Poisson-Gaussian noise ``(a, b)``, clipped."""
    from fluoden_batch.demo import clean_plane
    from fluoden_batch.noise import simulate

    clean = clean_plane(size, np.random.default_rng(seed))
    noisy = simulate(clean, a, b, clip=(0.0, SYNTH_PEAK), rng=seed + 1000)
    noisy = np.rint(noisy)  # a 12-bit camera stores integers
    return Image(
        f"synth/a={a:g},b={b:g}/{seed}/{size}",
        "synthetic",
        f"a={a:g}, b={b:g}",
        noisy,
        clean,
        SYNTH_PEAK,
    )


def scores(image: Image, out: np.ndarray) -> tuple[float, float]:
    """(PSNR dB, SSIM): FMD scoring (mean over 256x256 crops, peak 255) on FMD images,
    whole-plane PSNR/SSIM with data_range 4095 on synthetic ones."""
    from fluoden_batch.metrics import fmd_scores, psnr, ssim

    out = np.clip(out, 0.0, image.peak)
    if image.key.startswith("fmd/"):
        return fmd_scores(out, image.clean, FMD_PEAK, crop=min(256, *image.noisy.shape))
    return psnr(out, image.clean, image.peak), ssim(out, image.clean, image.peak)


# -------------------------------------------------------------------------- models


class ModelSet:
    """A model spec: a shipped name or path, or ``PATH_A,PATH_B`` (leave-types-out folds).

    With two fold models (``benchmarks/train_fmd.py --fold A`` / ``--fold B``) every FMD
    image is denoised by the fold that did not train on its sample type; other images
    (synthetic) by the fold-A model.
    """

    def __init__(self, spec: str):
        from fluoden_batch.models import load_model

        self.spec = spec
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        self.models = {name: load_model(name) for name in parts}
        self.fold = len(parts) == 2
        self.first = self.models[parts[0]]
        if self.fold:
            from train_fmd import GROUPS

            a, b = (self.models[p] for p in parts)
            if a.metadata.normalisation != b.metadata.normalisation:
                raise SystemExit(f"{spec}: the two folds normalise their inputs differently")
            self.by_type = {t: b for t in GROUPS["A"]} | {t: a for t in GROUPS["B"]}
        self.label = (
            f"{self.first.metadata.name} (out-of-fold)" if self.fold else self.first.metadata.name
        )

    def module_for(self, kind: str):
        loaded = self.by_type.get(kind, self.first) if self.fold else self.first
        return loaded.module

    def normalisation(self):
        """The models' input normalisation (``models.weights.Normalisation``)."""
        return self.first.metadata.normalisation

    def describe(self) -> str:
        files = ", ".join(f"`{m.path.name}` ({m.digest[:15]})" for m in self.models.values())
        arch = self.first.metadata.architecture
        how = " used leave-types-out (each FMD type by the fold that never saw it)"
        return f"`{self.label}`: {files}; DnCNN {arch.depth}x{arch.width}" + (
            how if self.fold else ""
        )


def try_model(spec: str | None) -> tuple[ModelSet | None, str]:
    """(ModelSet, "") or (None, why it is unavailable)."""
    if not spec:
        return None, "no model given"
    try:
        return ModelSet(spec), ""
    except Exception as exc:  # ModelError for an absent name/path, anything unreadable
        return None, f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------- protocols

Denoise = Callable[[Image], np.ndarray]


def on_8bit_scale(fn: Callable[[np.ndarray], np.ndarray], plane: np.ndarray, peak: float):
    """Run an 8-bit-scale function (which clips to 0..255) on data of another peak.

    NLM with ``h`` and ``sigma`` proportional to the estimated noise std is equivariant to
    a scaling of the data, so ``fn(s x) / s`` with ``s = 255 / peak`` is the same method.
    """
    if peak == FMD_PEAK:
        return fn(plane)
    s = FMD_PEAK / peak
    return fn(plane * s) / s


def nlm(image: Image) -> np.ndarray:
    """eval_fmd.nlm: 5x5 patches, 13x13 search, fast mode, h = 0.8 sigma (estimated)."""
    from eval_fmd import nlm as nlm_8bit

    return on_8bit_scale(nlm_8bit, image.noisy, image.peak)


def gat_params(plane: np.ndarray) -> tuple[float, float]:
    """(a, b) for the GAT from ``fluoden_batch.noise.estimate`` (a floored as the pipeline)."""
    from fluoden_batch.noise import estimate
    from fluoden_batch.pipeline.statistics import gat_parameters

    return gat_parameters(estimate(plane))


def vst_nlm(h: float) -> Denoise:
    """GAT with estimated (a, b), NLM at unit noise std with strength ``h``, exact unbiased
    inverse (Makitalo & Foi 2013): ``fluoden_batch.restore.classical.vst_nlm``."""
    from fluoden_batch.restore import classical

    def run(image: Image) -> np.ndarray:
        return classical.vst_nlm(image.noisy, *gat_params(image.noisy), h=h)

    return run


def wavelet(image: Image) -> np.ndarray:
    """scikit-image BayesShrink wavelet denoising, soft thresholds, sigma estimated."""
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(image.noisy, method="BayesShrink", mode="soft", rescale_sigma=True)


def bm3d_available() -> tuple[bool, str]:
    from fluoden_batch.restore import classical

    if classical.bm3d_available():
        return True, ""
    return False, (
        "BM3D and VST+BM3D skipped: the optional `bm3d` package is not installed "
        "(non-commercial licence, never a dependency of fluoden-batch)."
    )


def bm3d_plain(image: Image) -> np.ndarray:
    """``restore.classical.bm3d`` at the sigma of ``estimate_sigma``."""
    from skimage.restoration import estimate_sigma

    from fluoden_batch.restore import classical

    return classical.bm3d(image.noisy, float(estimate_sigma(image.noisy)))


def vst_bm3d(image: Image) -> np.ndarray:
    """``restore.classical.vst_bm3d`` with (a, b) of :func:`gat_params`."""
    from fluoden_batch.restore import classical

    return classical.vst_bm3d(image.noisy, *gat_params(image.noisy))


def _plane_params(models: ModelSet, plane: np.ndarray, noise: tuple[float, float] | None = None):
    """PlaneParams of one plane: the model's normalisation range of the plane itself (what
    ``pipeline.statistics.channel_ranges`` computes over a channel), of the GAT for vst."""
    from fluoden_batch.models.normalise import normalisation_range
    from fluoden_batch.noise import gat_forward
    from fluoden_batch.restore.protocols import PlaneParams

    norm = models.normalisation()
    if noise is None:
        return PlaneParams(*normalisation_range(plane, norm))
    return PlaneParams(*normalisation_range(gat_forward(plane, *noise), norm), *noise)


def dncnn_whole(models: ModelSet, tta: bool = False) -> Denoise:
    """The whole protocol; ``tta``: the mean over the 8 flips/rotations (``--tta``)."""
    from fluoden_batch.restore.inference import Dihedral
    from fluoden_batch.restore.protocols import whole

    def run(image: Image) -> np.ndarray:
        params = _plane_params(models, image.noisy)
        module = models.module_for(image.kind)
        return whole(Dihedral(module) if tta else module, image.noisy, params, tile=None)

    return run


def dncnn_vst(models: ModelSet) -> Denoise:
    from fluoden_batch.restore.protocols import vst

    def run(image: Image) -> np.ndarray:
        params = _plane_params(models, image.noisy, gat_params(image.noisy))
        return vst(models.module_for(image.kind), image.noisy, params, tile=None)

    return run


def dncnn_masked(models: ModelSet, k: int, sigma: float) -> Denoise:
    """The masked protocol of ``fluoden_batch/clustering/masked.py``: K-means centres of
    the plane, labels of the smoothed plane, band-filled parts through the whole
    protocol (normalisation of the full plane), merged by label. K = 1 is ``whole``."""
    from fluoden_batch.clustering import cluster_image
    from fluoden_batch.clustering.masked import masked_denoise
    from fluoden_batch.restore.protocols import whole

    def run(image: Image) -> np.ndarray:
        module = models.module_for(image.kind)
        params = _plane_params(models, image.noisy)
        centres = cluster_image(image.noisy, "kmeans", k=k, seed=0, backend="cpu").means
        return masked_denoise(lambda p: whole(module, p, params), image.noisy, centres, sigma)

    return run


# -------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float
    seconds: float
    mpx: float

    @property
    def s_per_mpx(self) -> float:
        return self.seconds / self.mpx


_MEMO: dict[tuple[str, str], Score] = {}


def score(image: Image, name: str, fn: Denoise) -> Score:
    """Run protocol ``name`` on ``image`` once per process (memoised), timed and scored."""
    key = (image.key, name)
    if key not in _MEMO:
        t0 = time.perf_counter()
        out = fn(image)
        seconds = time.perf_counter() - t0
        _MEMO[key] = Score(*scores(image, out), seconds, image.mpx)
    return _MEMO[key]


def mean_scores(items: Sequence[Score]) -> Score:
    a = np.array([(s.psnr, s.ssim, s.seconds, s.mpx) for s in items])
    return Score(*a.mean(axis=0))


# -------------------------------------------------------------------------- reports


def fmt(x: float, digits: int = 2) -> str:
    return "NaN" if x != x else f"{x:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> list[str]:
    """Markdown table lines; ``align`` one letter per column (l/r), default right."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    lines = ["| " + " | ".join(header) + " |", sep]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


class Report:
    """One markdown file ``<out>/<name>.md`` with a header: data, parameters, machine,
    command, wall time."""

    def __init__(self, ctx: Context, name: str, title: str):
        self.ctx, self.name, self.title = ctx, name, title
        self.data: list[str] = []
        self.params: list[str] = []
        self.body: list[str] = []
        self.files: list[Path] = []
        self.started = time.perf_counter()

    def add(self, *lines: str) -> None:
        self.body.extend(lines)

    def skip(self, text: str) -> None:
        self.ctx.say(text)
        self.body += [f"**{text}**", ""]

    @property
    def md_path(self) -> Path:
        return self.ctx.out / f"{self.name}.md"

    def write(self) -> Path:
        mode = "quick" if self.ctx.quick else "full"
        head = [
            f"# {self.title}",
            "",
            f"Command: `{self.ctx.command}` ({mode} mode)  ",
            f"Machine: {machine_line(self.ctx.threads)}  ",
            f"Wall time of this experiment: {time.perf_counter() - self.started:.0f} s",
            "",
            "Data:",
            "",
            *(f"- {d}" for d in self.data),
            "",
            "Parameters:",
            "",
            *(f"- {p}" for p in self.params),
            "",
        ]
        self.ctx.out.mkdir(parents=True, exist_ok=True)
        self.md_path.write_text("\n".join(head + self.body).rstrip() + "\n")
        self.files.insert(0, self.md_path)
        return self.md_path

    def figure(self, fig, suffix: str = "", subtitle: str = "") -> Path:
        """Save a matplotlib figure as ``<name><suffix>.png`` (dpi 100) and link it."""
        import matplotlib.pyplot as plt

        title = f"{self.title}\n{subtitle}" if subtitle else self.title
        fig.suptitle(f"{title}\n{short_machine()}", fontsize=9)
        path = self.ctx.out / f"{self.name}{suffix}.png"
        self.ctx.out.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        self.files.append(path)
        self.body += [f"![{self.title}]({path.name})", ""]
        return path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------ protocol sets


def noisy_input(image: Image) -> np.ndarray:
    return image.noisy


def protocol_set(
    ctx: Context, *, baselines: bool = False
) -> tuple[dict[str, Denoise], list[str], str]:
    """The compared protocols in table order, what was skipped and why, and a report line
    describing the models loaded for them.

    Classical: noisy input, NLM, VST+NLM, wavelet, BM3D and VST+BM3D (only where the
    optional ``bm3d`` package imports). DnCNN (``ctx.model``): whole, masked (K =
    ``ctx.k``), VST; the masked-trained ``ctx.masked_model`` with the masked protocol where
    its weights exist; with ``baselines``, ``ctx.model`` whole with test-time augmentation
    and ``ctx.baseline_models`` with the whole protocol.
    """
    protos: dict[str, Denoise] = {
        "noisy input": noisy_input,
        "NLM": nlm,
        f"VST+NLM (h={ctx.nlm_h:g})": vst_nlm(ctx.nlm_h),
        "wavelet (BayesShrink)": wavelet,
    }
    skipped = []
    ok, why = bm3d_available()
    if ok:
        protos["BM3D"] = bm3d_plain
        protos["VST+BM3D"] = vst_bm3d
    else:
        skipped.append(why)
    models, why = try_model(ctx.model)
    if models is None:
        raise RuntimeError(f"model {ctx.model!r} unavailable: {why}")
    tag = models.label
    protos[f"DnCNN whole [{tag}]"] = dncnn_whole(models)
    protos[f"DnCNN masked K={ctx.k} [{tag}]"] = dncnn_masked(models, ctx.k, ctx.mask_sigma)
    protos[f"VST+DnCNN [{tag}]"] = dncnn_vst(models)
    masked_models, why = try_model(ctx.masked_model)
    if masked_models is None:
        skipped.append(
            f"Masked-trained model rows skipped: `{ctx.masked_model}` unavailable ({why})."
        )
    else:
        protos[f"DnCNN masked K={ctx.k} [{masked_models.label}, masked-trained]"] = dncnn_masked(
            masked_models, ctx.k, ctx.mask_sigma
        )
    line = f"models: {models.describe()}"
    if masked_models:
        line += f"; masked-trained {masked_models.describe()}"
    if baselines and [b for b in ctx.baseline_models if b != ctx.model]:
        line += f"; baselines (whole protocol): {', '.join(ctx.baseline_models)}"
    if baselines:
        protos[f"DnCNN whole + TTA [{tag}]"] = dncnn_whole(models, tta=True)
        for spec in ctx.baseline_models:
            if spec == ctx.model:
                continue
            extra, why = try_model(spec)
            if extra is None:
                skipped.append(f"Baseline `{spec}` skipped ({why}).")
            else:
                protos[f"DnCNN whole [{extra.label}]"] = dncnn_whole(extra)
    return protos, skipped, line


def protocol_report(
    ctx: Context, name: str, title: str, *, baselines: bool = False
) -> tuple[Report, dict[str, Denoise]]:
    """A report for the protocols of :func:`protocol_set` (those skipped noted), with the
    parameter lines that describe the protocols and the models."""
    rep = Report(ctx, name, title)
    protos, skipped, line = protocol_set(ctx, baselines=baselines)
    for why in skipped:
        rep.skip(why)
    rep.params += [*describe_protocols(ctx), line]
    if baselines:
        rep.params.append(
            "DnCNN whole + TTA: `fluoden denoise --tta`, the whole protocol's mean over the 8 "
            "flips/rotations of the plane (`restore.inference.Dihedral`), 8x the model time"
        )
    return rep, protos


def describe_protocols(ctx: Context) -> list[str]:
    """Parameter lines for the reports."""
    lines = [
        "NLM: `benchmarks/eval_fmd.nlm` (scikit-image `denoise_nl_means`, 5x5 patches, 13x13 "
        "search, fast mode, h = 0.8 sigma, sigma from `estimate_sigma`; on 12-bit synthetic "
        "data applied to the data scaled to 0..255 and scaled back, which is the same method)",
        f"VST+NLM: generalized Anscombe with (a, b) from `fluoden_batch.noise.estimate` of the "
        f"image (a floored as in `pipeline.statistics.gat_parameters`), NLM at sigma = 1 with h = "
        f"{ctx.nlm_h:g} (the same h / sigma rule as NLM, not tuned on gt), exact unbiased "
        "inverse",
        "wavelet: scikit-image `denoise_wavelet`, BayesShrink, soft thresholds, sigma estimated",
        "BM3D / VST+BM3D: `bm3d.bm3d` with the estimated sigma / sigma = 1 after the GAT, only "
        "where the optional `bm3d` package is installed",
        "DnCNN whole: `restore.protocols.whole` with lo/hi = the model's 0.1 / 99.9 "
        "percentiles of the plane; VST+DnCNN: `restore.protocols.vst` with (a, b) as for "
        "VST+NLM and the percentiles of the transformed plane; DnCNN masked: "
        f"`clustering.masked` with K = {ctx.k} K-means centres of the plane, labels smoothed "
        f"with sigma = {ctx.mask_sigma} px, each part through `whole` with the plane's lo/hi",
        "outputs clipped to 0..peak (255 for FMD, 4095 synthetic) before scoring; whole-plane "
        f"inference (no tiles), CPU, {ctx.threads} torch thread(s)",
    ]
    return lines


# ----------------------------------------------------------------- crop-safe keys


def fmd_crops(
    level: str,
    types: Sequence[str] | None = None,
    per_type: int | None = None,
    crop: int | None = None,
) -> list[Image]:
    """:func:`fmd_images` whose keys name the crop (``.../Confocal_MICE_1@128``), so the
    memo of :func:`score` never mixes a crop with the full frame or another crop size."""
    from dataclasses import replace

    images = fmd_images(level, types, per_type, crop)
    return [replace(im, key=f"{im.key}@{crop}") for im in images] if crop else images


def score_all(
    images: Sequence[Image], protos: dict[str, Denoise]
) -> tuple[list[Image], dict[str, list[Score]], list[str]]:
    """Every protocol on every image, keeping only the images where all of them run.

    Returns the kept images, per protocol their scores (in the order of the kept images),
    and one message per image left out (e.g. a crop too flat for noise estimation), so
    that the protocols are always compared on the same images.
    """
    from fluoden_batch.errors import FluodenError

    kept, per, left_out = [], {name: [] for name in protos}, []
    for im in images:
        try:
            row = {name: score(im, name, fn) for name, fn in protos.items()}
        except FluodenError as exc:
            failed = next(n for n in protos if (im.key, n) not in _MEMO)
            left_out.append(
                f"{im.key} left out of every protocol: {failed} failed "
                f"({type(exc).__name__}: {exc})."
            )
            continue
        kept.append(im)
        for name, s in row.items():
            per[name].append(s)
    return kept, per, left_out
