"""Simulated, labelled survey cutouts (GalSim AGN hosts, lenstronomy lenses, morphology) and the benchmarks run on them."""
