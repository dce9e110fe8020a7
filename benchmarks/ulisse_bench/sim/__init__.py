"""Simulated, labelled survey cutouts for the benchmarks: GalSim AGN hosts (:mod:`.agn`), extended
morphology (:mod:`.morphology`), lenstronomy strong lenses (:mod:`.lenses`) and noisy/clean pairs
for the denoisers (:mod:`.denoise_pairs`)."""
