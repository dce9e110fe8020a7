"""SDSS: catalogues, frames, north-up cutouts and batch indexing of survey fields (the ``ulisse sdss`` verbs)."""
