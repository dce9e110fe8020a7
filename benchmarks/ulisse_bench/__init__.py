"""ulisse-bench: ulisse's simulators, benchmarks and web-UI soak driver (development only).

Not part of the product: ``ulisse`` imports nothing from here. Installed beside it for
development and CI (``pip install -e ".[dev]" -e ./benchmarks``), it registers the
``ulisse benchmark`` command group through the ``ulisse`` entry-point group, as any
third-party plugin does (:mod:`ulisse_bench.plugin`). Every benchmark measures the
product's own code paths: ``ulisse.Encoder`` with its pool/tta/runtime options,
``embed_files``, ``create_index``/``Index.search``, and the plugins' public APIs.

Modules:
    sim/          simulated, labelled cutouts (AGN hosts, morphology, lenses, denoise pairs)
    agn           ``ulisse benchmark agn``: the ULISSE table on the simulated AGN set
    discovery     ``ulisse benchmark discovery|morphology``: pooling x symmetry settings, confirmed expansion
    speed         ``ulisse benchmark speed``: embedding against a ULISSE-style reference; index search
    store         ``ulisse benchmark store``: the index store at survey scale
    lenses        ``ulisse benchmark lenses``: regression heads on simulated strong lenses
    denoise       ``ulisse benchmark denoise``: denoisers on low-S/N cutouts, and AGN retrieval with them
    features      ``ulisse benchmark features``: the feature browser's display path on a large index
    feedback      ``oracle_rounds``: simulated rounds of oracle marks for the "more like my marks" re-ranking
    soak          ``python -m ulisse_bench.soak``: parallel Chromium sessions against ``ulisse ui``
    sdss_scale    ``python -m ulisse_bench.sdss_scale``: SDSS indexing at scale on loopback fields
"""

__version__ = "0.1.0"
