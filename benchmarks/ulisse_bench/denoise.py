"""``ulisse benchmark denoise``: denoisers on held-out faint simulated galaxies (and, optionally, AGN retrieval).

1. Noisy/clean pairs of simulated SDSS-like cutouts made ``dimmer`` magnitudes
   fainter (:mod:`ulisse_bench.sim.denoise_pairs`): a training set (seed 1) and
   the AGN benchmark's own objects (seed 0) as the held-out set.
2. Two denoisers on the FITS fluxes (g, r, i, nanomaggies), trained on the
   training set only with the default options: supervised (noisy/clean pairs)
   and self-supervised (the noisy cutouts alone, blind spot). Each training is
   timed, with the torch thread count and the load average before and after.
3. On the first ``metric_n`` held-out objects: PSNR, SSIM and the central
   aperture flux ratio (r = 6 px, output over clean) of the noisy input, the
   Gaussian filter at its best sigma, non-local means, wavelets and the two models.
4. With ``retrieval_n`` > 0 also supervised and self-supervised models on the
   8-bit Lupton PNGs and one-shot AGN retrieval (AGN fraction among the first
   16 and 89 neighbours of ``prototypes`` random AGN prototypes) on the low-S/N
   PNGs as they are and denoised by each PNG model before embedding.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

import ulisse
from ulisse._io import atomic_write
from ulisse.plugins.denoise import TrainOptions, load, train
from ulisse.plugins.denoise.reporting import APERTURE_RADIUS, before_after_grid, compare, summarise, summary_markdown
from ulisse.plugins.denoise.training import load_training_set

from .sim.denoise_pairs import simulate_pairs

FITS_MODELS = {"fits-supervised": ("fits", False), "fits-self-supervised": ("fits", True)}
PNG_MODELS = {"png-supervised": ("png", False), "png-self-supervised": ("png", True)}
MODELS = {**FITS_MODELS, **PNG_MODELS}  # name: (format folder suffix, self-supervised)
AGN = "AGN"
LABELS = {"input": "noisy input", "nl-means": "non-local means (scikit-image)",
          "wavelet": "wavelet BayesShrink (scikit-image)", "supervised": "**supervised autoencoder**",
          "self-supervised": "**self-supervised autoencoder** (blind spot)"}


def _model(out: Path, name: str, train_dir: Path, options: TrainOptions, device: str, progress: bool):
    """The model ``name`` (reused when trained before on the same set with the same options) and how it was trained."""
    fmt, self_sup = MODELS[name]
    model_dir = out / "models" / name
    marker = model_dir / "benchmark.json"
    params = {"train": str(train_dir), "options": options.__dict__}
    if marker.is_file() and json.loads(marker.read_text()).get("params") == params:
        return load(model_dir), json.loads(marker.read_text())["run"] | {"reused": True}
    import torch

    load_before = os.getloadavg()
    t, cpu = time.perf_counter(), time.process_time()
    den = train(train_dir / f"noisy_{fmt}", None if self_sup else train_dir / f"clean_{fmt}", self_supervised=self_sup,
                options=options, device=device, out=model_dir, progress=progress)
    run = {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - cpu, "threads": torch.get_num_threads(), "device": str(den.device),
           "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in os.getloadavg()],
           "images": den.config.training["images"], "reused": False}
    atomic_write(marker, json.dumps({"params": params, "run": run}))
    return den, run


def _index(path: Path, files: list[Path], labels: Path, encoder, progress: bool):
    """An index of ``files`` (reused when it holds them all with this encoder spec)."""
    try:
        index = ulisse.open_index(path)
        if len(index) == len(files) and index.encoder_spec.to_dict() == encoder.spec.to_dict():
            return index
    except ulisse.UlisseError:
        pass
    index, _ = ulisse.build_index(files, path, labels, encoder=encoder, overwrite=True, progress=progress)
    return index


def _retrieval(index, chosen) -> pd.DataFrame:
    from ulisse.plugins.prototype import query

    rows = []
    for pid in chosen:
        r = query(index, str(pid), k=89, n=[16, 89], label="label")
        rows.append({"prototype": str(pid), "agn_at_16": float(r.fractions.loc[AGN, 16]),
                     "agn_at_89": float(r.fractions.loc[AGN, 89])})
    return pd.DataFrame(rows)


def _fits_section(out: Path, test: Path, metric_n: int, models: dict) -> tuple[list[str], pd.DataFrame]:
    files = sorted((test / "noisy_fits").iterdir())[:metric_n]
    noisy, clean = load_training_set(files, test / "clean_fits")
    named = {kind: models[f"fits-{kind}"] for kind in ("supervised", "self-supervised")}
    per_image, sigma, outputs = compare(named, noisy, clean)
    summary = summarise(per_image)
    atomic_write(out / "metrics-fits.csv", lambda p: per_image.to_csv(p, index=False))
    before_after_grid(noisy, clean, outputs, out / "before_after-fits.png")
    wide = per_image.pivot(index="id", columns="method", values="psnr")
    psnr = summary["psnr_mean"]
    lines = [f"### FITS g, r, i fluxes ({len(noisy)} held-out cutouts; PSNR range = each clean cube's max - min; "
             f"aperture: the {2 * APERTURE_RADIUS:g} px wide circle at the centre, g + r + i)", "",
             summary_markdown(summary, sigma, LABELS),
             f"- Self-supervised minus best-sigma Gaussian: {psnr['self-supervised'] - psnr['gaussian']:+.2f} dB mean "
             f"PSNR (better on {int((wide['self-supervised'] > wide['gaussian']).sum())} of {len(noisy)} cutouts); "
             f"its central aperture flux ratio {summary.loc['self-supervised', 'flux_ratio']:.3f} "
             f"(median per cutout {summary.loc['self-supervised', 'flux_ratio_median']:.3f}).",
             f"- Supervised minus non-local means: {psnr['supervised'] - psnr['nl-means']:+.2f} dB mean PSNR (better on "
             f"{int((wide['supervised'] > wide['nl-means']).sum())} of {len(noisy)} cutouts); its central aperture "
             f"flux ratio {summary.loc['supervised', 'flux_ratio']:.3f}.",
             f"- Self-supervised minus supervised: {psnr['self-supervised'] - psnr['supervised']:+.2f} dB.", ""]
    return lines, summary


def _png_section(out: Path, test: Path, metric_n: int, models: dict) -> list[str]:
    files = sorted((test / "noisy_png").iterdir())[:metric_n]
    noisy, clean = load_training_set(files, test / "clean_png")
    named = {kind: models[f"png-{kind}"] for kind in ("supervised", "self-supervised")}
    per_image, sigma, outputs = compare(named, noisy, clean)
    atomic_write(out / "metrics-png.csv", lambda p: per_image.to_csv(p, index=False))
    before_after_grid(noisy, clean, outputs, out / "before_after-png.png")
    return ["### 8-bit Lupton RGB PNGs (PSNR range 255)", "", summary_markdown(summarise(per_image), sigma, LABELS)]


def run_benchmark(out: Path, train_n: int = 1000, test_n: int = 200, metric_n: int = 200, retrieval_n: int = 0,
                  dimmer: float = 3.0, options: TrainOptions = TrainOptions(), prototypes: int = 20,
                  device: str = "auto", progress: bool = True, command: str | None = None) -> str:
    """Run the whole benchmark in ``out`` (sets, models and indexes are reused when present); the Markdown report."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    simulate_pairs(out / "train", train_n, seed=1, dimmer=dimmer, progress=progress)
    labels = simulate_pairs(out / "test", max(test_n, metric_n, retrieval_n), seed=0, dimmer=dimmer, progress=progress)
    timings["simulate"] = time.perf_counter() - t
    names = list(FITS_MODELS) + (list(PNG_MODELS) if retrieval_n else [])
    models, runs = {}, {}
    for name in names:
        models[name], runs[name] = _model(out, name, out / "train", options, device, progress)
    test = out / "test"
    t = time.perf_counter()
    sections, summary = _fits_section(out, test, metric_n, models)
    timings["metrics fits"] = time.perf_counter() - t
    if retrieval_n:
        t = time.perf_counter()
        sections += _png_section(out, test, metric_n, models)
        timings["metrics png"] = time.perf_counter() - t
        t = time.perf_counter()
        sections += _retrieval_section(out, test, labels.head(retrieval_n), prototypes, device, progress)
        timings["retrieval"] = time.perf_counter() - t

    head = [f"Held-out set: the first {metric_n} objects of the AGN benchmark (seed 0: galaxies, 12 % of them with "
            f"an AGN nucleus), made {dimmer:g} mag fainter (r {15.5 + dimmer:g}-{18.5 + dimmer:g}) with the "
            f"simulator's SDSS-like noise (Poisson on source and sky). Training set: {train_n} other objects (seed 1), "
            "same noise. Clean versions: rendered 10 mag brighter and scaled back (noise 10^-4 of the sky's).",
            f"Models: the `ulisse denoise train` defaults: width {options.width}, depth {options.depth} "
            f"({sum(p.numel() for p in models['fits-supervised'].network.parameters())} parameters), {options.steps} "
            f"steps of {options.batch_size} random {options.crop} px crops, Adam, one-cycle lr {options.lr:g}; inputs "
            "normalised per image and band by the sky (sigma-clipped median and 1.4826 MAD); self-supervised: "
            f"stratified blind spot on 1 pixel in {round(1 / options.mask_fraction)} per band, replaced by a random "
            f"{options.replacement} of its 5 x 5 window, loss on those pixels only.", ""]
    trained = []
    for name, run in runs.items():
        load_text = (f"load average {run['load_before'][0]:.1f} before, {run['load_after'][0]:.1f} after "
                     f"(1-min; 5-min {run['load_before'][1]:.1f} / {run['load_after'][1]:.1f})")
        trained.append(f"- {name}: {run['seconds']:.0f} s on {run['images']} training cutouts (+ the held-out tenth; "
                       f"{run.get('cpu_seconds', float('nan')):.0f} CPU seconds, all threads), "
                       f"{run['device']}, torch {run['threads']} thread(s), {load_text}"
                       + (" (measured when trained; reused by this run)" if run["reused"] else "") + ".")
    foot = ["", "Training (data loading included; the machine's 2 cores were shared with other jobs):"] + trained + [
            "", "Timings of this run: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ".",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, torch "
            f"{__import__('torch').__version__}, scikit-image {__import__('skimage').__version__}."]
    if command:
        foot.append(f"Command: `{command}`")
    return "\n".join(head + sections + foot) + "\n"


def _retrieval_section(out: Path, test: Path, labels: pd.DataFrame, prototypes: int, device: str,
                       progress: bool) -> list[str]:
    catalog = test / "labels.csv"
    rng = np.random.default_rng(0)
    agn_ids = labels["id"][labels["label"] == AGN].to_numpy()
    chosen = rng.choice(agn_ids, size=min(prototypes, len(agn_ids)), replace=False)
    noisy_files = [test / "noisy_png" / f"{i}.png" for i in labels["id"]]
    runs = [("low-S/N PNGs as they are", "noisy", noisy_files, []),
            ("denoised by the supervised PNG model", "supervised", noisy_files,
             [("denoise", str(out / "models" / "png-supervised"))]),
            ("denoised by the self-supervised PNG model", "self-supervised", noisy_files,
             [("denoise", str(out / "models" / "png-self-supervised"))])]
    retrieval = []
    for label, key, files, preprocess in runs:
        encoder = ulisse.Encoder.load(device=device, preprocess=preprocess)
        index = _index(out / f"index-{key}", files, catalog, encoder, progress)
        retrieval.append((label, _retrieval(index, chosen)))
    n = len(labels)
    base = float((labels["label"] == AGN).mean())
    strong = labels.set_index("id").loc[chosen, "agn_contrast"].to_numpy() >= 0.3
    sections = [f"### AGN retrieval on the low-S/N set ({n} cutouts, {int((labels['label'] == AGN).sum())} AGN, "
                f"base rate {100 * base:.1f} %)", "",
                f"One-shot queries from the same {len(chosen)} random AGN prototypes; encoder "
                f"{encoder.spec.model_name} ({encoder.spec.weights_source}). Denoising is applied to every cutout "
                "before embedding (prototypes included), as `Encoder.load(preprocess=[(\"denoise\", MODEL_DIR)])` "
                "does; the model's fingerprint is part of the index's encoder spec.", "",
                "| cutouts | AGN@16 mean | AGN@16 median | AGN@89 mean | AGN@16, contrast >= 0.3 | AGN@16, fainter nuclei |",
                "|---|---|---|---|---|---|"]
    for label, per in retrieval:
        sections.append(f"| {label} | {100 * per['agn_at_16'].mean():.1f} % | {100 * per['agn_at_16'].median():.1f} % | "
                        f"{100 * per['agn_at_89'].mean():.1f} % | {100 * per['agn_at_16'][strong].mean():.1f} % "
                        f"({int(strong.sum())}) | {100 * per['agn_at_16'][~strong].mean():.1f} % ({int((~strong).sum())}) |")
    noisy16 = retrieval[0][1]["agn_at_16"].to_numpy()
    for label, per in retrieval[1:3]:
        d = per["agn_at_16"].to_numpy() - noisy16
        sections.append(f"\n{label[0].upper() + label[1:]}: AGN@16 {100 * d.mean():+.1f} points against the noisy "
                        f"cutouts (higher for {int((d > 0).sum())}, lower for {int((d < 0).sum())} of {len(d)} prototypes).")
    return sections + [""]
