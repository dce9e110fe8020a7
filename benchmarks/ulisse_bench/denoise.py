"""``ulisse benchmark denoise``: denoisers on held-out low-S/N simulated cutouts, and AGN retrieval with them.

1. Noisy/clean pairs of simulated SDSS-like cutouts made ``dimmer`` magnitudes
   fainter (:mod:`ulisse_bench.sim.denoise_pairs`): a training set (seed 1) and the AGN benchmark's
   own objects (seed 0) as the held-out set.
2. Three denoisers, trained on the training set only: supervised on FITS fluxes
   (g, r, i), supervised and self-supervised on the 8-bit Lupton PNGs.
3. PSNR and SSIM on the first ``metric_n`` held-out objects: input, Gaussian
   filter at its best sigma, non-local means, wavelets, the two models.
4. One-shot AGN retrieval (AGN fraction among the first 16 and 89 neighbours of
   ``prototypes`` random AGN prototypes) on the low-S/N PNGs as they are, and
   denoised by each PNG model before embedding.
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
from ulisse.plugins.denoise.reporting import before_after_grid, compare, summarise, summary_markdown
from ulisse.plugins.denoise.training import load_training_set

from .sim.denoise_pairs import simulate_pairs

MODELS = {  # name: (format folder suffix, self-supervised); a FITS self-supervised model is left out for time
    "fits-supervised": ("fits", False), "png-supervised": ("png", False), "png-self-supervised": ("png", True),
}
AGN = "AGN"


def _model(out: Path, name: str, train_dir: Path, options: TrainOptions, device: str, progress: bool):
    fmt, self_sup = MODELS[name]
    model_dir = out / "models" / name
    marker = model_dir / "benchmark.json"
    params = {"train": str(train_dir), "options": options.__dict__}
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return load(model_dir), False
    den = train(train_dir / f"noisy_{fmt}", None if self_sup else train_dir / f"clean_{fmt}", self_supervised=self_sup,
                options=options, device=device, out=model_dir, progress=progress)
    atomic_write(marker, json.dumps(params))
    return den, True


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


def run_benchmark(out: Path, train_n: int = 1500, test_n: int = 2000, metric_n: int = 300, retrieval_n: int = 1000,
                  dimmer: float = 2.5, options: TrainOptions = TrainOptions(), prototypes: int = 20,
                  device: str = "auto", progress: bool = True, command: str | None = None) -> str:
    """Run the whole benchmark in ``out`` (sets, models and indexes are reused when present); the Markdown report."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    simulate_pairs(out / "train", train_n, seed=1, dimmer=dimmer, progress=progress)
    labels = simulate_pairs(out / "test", test_n, seed=0, dimmer=dimmer, progress=progress)
    timings["simulate"] = time.perf_counter() - t
    models = {}
    for name in MODELS:
        t = time.perf_counter()
        models[name], fresh = _model(out, name, out / "train", options, device, progress)
        timings[f"train {name}" + ("" if fresh else " (reused)")] = time.perf_counter() - t

    test = out / "test"
    sections = []
    for fmt, what in (("fits", "FITS g, r, i fluxes (nanomaggies; PSNR range = each clean cube's max - min)"),
                      ("png", "8-bit Lupton RGB PNGs (PSNR range 255)")):
        t = time.perf_counter()
        files = sorted((test / f"noisy_{fmt}").iterdir())[:metric_n]
        noisy, clean = load_training_set(files, test / f"clean_{fmt}")
        named = {kind: models[f"{fmt}-{kind}"] for kind in ("supervised", "self-supervised") if f"{fmt}-{kind}" in models}
        per_image, sigma, outputs = compare(named, noisy, clean)
        summary = summarise(per_image)
        atomic_write(out / f"metrics-{fmt}.csv", lambda p: per_image.to_csv(p, index=False))
        before_after_grid(noisy, clean, outputs, out / f"before_after-{fmt}.png")
        sup, gauss = summary.loc["supervised", "psnr_mean"], summary.loc["gaussian", "psnr_mean"]
        wins = (per_image.pivot(index="id", columns="method", values="psnr")
                .pipe(lambda w: int((w["supervised"] > w["gaussian"]).sum())))
        sections += [f"### {what}", "", summary_markdown(summary, sigma, {
            "input": "noisy input", "nl-means": "non-local means (scikit-image)",
            "wavelet": "wavelet BayesShrink (scikit-image)", "supervised": "**supervised autoencoder**",
            "self-supervised": "**self-supervised autoencoder** (blind spot)"}),
            f"Supervised model minus best-sigma Gaussian: {sup - gauss:+.2f} dB mean PSNR; better on {wins} of "
            f"{len(noisy)} cutouts." + (" Self-supervised minus input: "
            f"{summary.loc['self-supervised', 'psnr_mean'] - summary.loc['input', 'psnr_mean']:+.2f} dB."
            if "self-supervised" in named else ""), ""]
        timings[f"metrics {fmt}"] = time.perf_counter() - t

    t = time.perf_counter()
    labels = labels.head(retrieval_n)
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
    timings["retrieval"] = time.perf_counter() - t
    n = len(labels)
    base = float((labels["label"] == AGN).mean())
    strong = labels.set_index("id").loc[chosen, "agn_contrast"].to_numpy() >= 0.3
    sections += [f"### AGN retrieval on the low-S/N set ({n} cutouts, {int((labels['label'] == AGN).sum())} AGN, "
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

    head = [f"Held-out set: the first {test_n} objects of the AGN benchmark (seed 0), made {dimmer:g} mag fainter "
            f"(r {15.5 + dimmer:g}-{18.5 + dimmer:g}) with the simulator's SDSS-like noise; PSNR/SSIM on its first "
            f"{metric_n}, AGN retrieval on its first {retrieval_n}. Training set: {train_n} other objects (seed 1), same noise. Clean versions: rendered 10 mag "
            "brighter and scaled back (noise 10^-4 of the sky's).",
            f"Models: width {options.width}, depth {options.depth} ({sum(p.numel() for p in models['png-supervised'].network.parameters())} "
            f"parameters), {options.steps} steps of {options.batch_size} random {options.crop} px crops, Adam, one-cycle lr "
            f"{options.lr:g}; self-supervised: blind spot on {options.mask_fraction:.3f} of the pixels.", ""]
    trained = [f"{name}: {m.config.training.get('seconds', float('nan')):.0f} s" for name, m in models.items()]
    foot = ["", "Training time per model (when trained): " + ", ".join(trained) + ".",
            "Timings of this run: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ".",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (torch "
            f"{__import__('torch').get_num_threads()} threads), Python {platform.python_version()}, torch "
            f"{__import__('torch').__version__}, scikit-image {__import__('skimage').__version__}."]
    if command:
        foot.append(f"Command: `{command}`")
    return "\n".join(head + sections + foot) + "\n"
