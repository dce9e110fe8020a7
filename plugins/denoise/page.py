"""Denoise: any object of the index before and after a ulisse denoiser (``ulisse denoise train``).

The model folder is typed in the sidebar (first choice: the denoiser the index
was built with, if any, else ``ULISSE_DENOISE_MODEL``). A model trained on
8-bit cutouts denoises the RGB cutout the encoder sees; a model trained on FITS
fluxes denoises the object's FITS file in flux units. Runs inside the app or
alone: ``ULISSE_UI_INDEX=ulisse-demo/hdf streamlit run plugins/denoise/page.py``.
"""

import os
from pathlib import Path

import numpy as np
import streamlit as st

import ulisse
from ulisse.errors import UlisseError
from ulisse.plugins import denoise
from ulisse.plugins.denoise import EIGHT_BIT, display_rgb, fingerprint_of, read_image
import ulisse.ui.kit as kit

MODEL_ENV = "ULISSE_DENOISE_MODEL"


@st.cache_resource(max_entries=4, show_spinner="Loading the denoiser…")
def load_model(path: str, fingerprint: str) -> denoise.Denoiser:
    return denoise.load(path)


def index_denoiser(index) -> str:
    """The model folder of the index's own denoise step, if it was built with one."""
    for step in getattr(index.encoder_spec, "preprocessors", None) or ():
        if isinstance(step, dict) and step.get("name") == "denoise":
            return str(step.get("arg") or "")
    return ""


def before_after(den: denoise.Denoiser, index, object_id: str):
    """(before, after, note) as uint8 RGB arrays for the page."""
    if den.config.domain == EIGHT_BIT:
        rgb = ulisse.plot.thumbnail(index, object_id)
        if rgb is None:
            raise UlisseError(f"{object_id}: its cutout file is gone")
        after = denoise.DenoiseStep(den)([rgb])[0]
        return rgb, after, "the 8-bit cutout the encoder sees"
    src = index.metadata_rows([index.row_of(object_id)])["source"].iloc[0]
    path = Path(src) if Path(str(src)).is_absolute() else Path(index.path) / str(src)
    image = read_image(path)
    cleaned = denoise.denoise_images(den, [image])[0]
    lo, hi = float(np.nanpercentile(image.data, 1)), float(np.nanpercentile(image.data, 99.8))
    rows = index.rgb.fits_rows  # as the thumbnails show them
    return (display_rgb(image.data, image.domain, lo, hi, rows), display_rgb(cleaned.data, image.domain, lo, hi, rows),
            "FITS fluxes (same asinh stretch for both)")


kit.page_setup("Denoise", url_state={"model": "denoise.model", "object": "denoise.id"})
index = kit.current_index()
if "denoise.model" not in st.session_state:
    st.session_state["denoise.model"] = index_denoiser(index) or os.environ.get(MODEL_ENV, "")
model_dir = st.sidebar.text_input("Denoiser model folder", key="denoise.model", placeholder="path/to/model",
                                  help="A folder written by `ulisse denoise train` (model.safetensors + config.json).")
if not st.session_state.get("denoise.id"):
    protos = kit.known_prototypes(index, f"Showing {kit.default_prototype(index)} instead.")
    st.session_state["denoise.id"] = protos[0] if protos else kit.default_prototype(index)
if st.session_state.get("denoise.model") is None:
    st.session_state["denoise.model"] = ""
object_id = st.text_input("Object id", key="denoise.id")
kit.sync_url()

st.title("Denoise")
if not model_dir:
    st.info("Type the folder of a denoiser in the sidebar (`ulisse denoise train --noisy DIR --clean DIR --out MODEL_DIR`).")
    st.stop()
try:
    den = load_model(model_dir, fingerprint_of(model_dir) if Path(model_dir, "config.json").is_file() else "")
except UlisseError as exc:
    st.error(str(exc))
    st.stop()
c = den.config
st.caption(f"{c.objective.capitalize()} denoiser for {'8-bit' if c.domain == EIGHT_BIT else 'FITS flux'} cutouts, "
           f"{c.channels} channel(s), fingerprint {den.fingerprint[:12]}.")
if not kit.has_object(index, object_id):
    st.warning(f"{object_id}: not in this index ({Path(index.path).name}). Type an id of this index.")
    st.stop()
try:
    before, after, note = before_after(den, index, object_id)
except UlisseError as exc:
    st.error(str(exc))
    st.stop()
left, right = st.columns(2)
left.image(kit.display_png(before, size=320), caption=f"{object_id}: before ({note})", width="stretch")
right.image(kit.display_png(after, size=320), caption=f"{object_id}: after", width="stretch")
removed = np.abs(before.astype(np.int16) - after.astype(np.int16))
st.caption(f"Mean absolute change {removed.mean():.1f} / 255 per pixel and channel.")
st.button("Use as the prototype", on_click=kit.use_as_prototype, args=(object_id,), icon=":material/search:")
