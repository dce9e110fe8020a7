"""Cluster search: one-shot queries of a sharded index whose shards stay resident on a Dask cluster.

The survey-scale counterpart of Search, for an index made of shards (``ulisse.indexes.shards``):
each shard is opened once on a worker of the cluster and kept there; a query by object id is
scattered to every shard and the neighbours merged exactly (:mod:`ulisse.indexes.dask_search`).
A shard whose worker is lost is named on the page, never silently left out: the page shows the
error, or, with "Answer without missing shards", the other shards' neighbours under a warning that
names the missing ones. Open it with
``ulisse ui --index SHARDED_DIR --dask tcp://scheduler:8786`` (or ``--dask local:4``: a cluster of
4 worker processes on this machine), or type both in the sidebar.
"""

import os
from pathlib import Path

import streamlit as st

from ulisse.cutouts import read_cutout
from ulisse.errors import UlisseError
from ulisse.indexes.dask_search import ShardsMissing, open_sharded
import ulisse.ui.kit as kit
from ulisse.ui.kit import DASK_ENV, INDEX_ENV


@st.cache_resource(max_entries=2, show_spinner="Opening the shards on the cluster…")
def sharded_index(path: str, dask: str):
    """One sharded index per path and cluster, opened once per process (its shards stay on their workers)."""
    return open_sharded(path, dask=dask)


def thumbnail(sharded, shard: str, source) -> bytes | None:
    """The cutout of a neighbour as a thumbnail (``source`` relative to its shard), or None."""
    if not isinstance(source, str) or not source:
        return None
    path = Path(source)
    path = path if path.is_absolute() else sharded.manifest.shard_path(shard) / path
    try:
        return kit.display_png(read_cutout(path).image)
    except (UlisseError, OSError, ValueError):
        return None


kit.page_setup("Cluster search")
st.title("Cluster search")
st.caption("Nearest neighbours in a sharded index whose shards stay open on the workers of a Dask cluster: "
           "the query goes to every shard, and their neighbours are merged by exact distance.")
if "cluster.path" not in st.session_state and os.environ.get(INDEX_ENV):
    st.session_state["cluster.path"] = os.environ[INDEX_ENV]
if "cluster.dask" not in st.session_state and os.environ.get(DASK_ENV):
    st.session_state["cluster.dask"] = os.environ[DASK_ENV]
path = st.sidebar.text_input("Sharded index", key="cluster.path", placeholder="path/to/sharded-index",
                             help="A sharded index directory (or a plain index, searched as one shard).")
dask = st.sidebar.text_input("Dask cluster", key="cluster.dask", placeholder="tcp://scheduler:8786",
                             help="A scheduler address, or local:N for N worker processes on this machine.")
kit.sync_url()  # the page is in the URL before it stops for what it lacks (a reload opens it again)
if not path or not dask:
    st.info("Give a sharded index and a Dask cluster in the sidebar (or start the app with "
            "`ulisse ui --index DIR --dask tcp://scheduler:8786`).")
    st.stop()
try:
    sharded = sharded_index(str(Path(path).expanduser().resolve()), dask.strip())
except (UlisseError, OSError, ValueError) as exc:
    st.error(str(exc).splitlines()[0])
    st.stop()
workers = sorted(set(sharded.placement.values()))
st.sidebar.caption(f"{len(sharded):,} objects · {len(sharded.manifest.shards)} shards on {len(workers)} workers")

object_id = st.text_input("Object id", key="cluster.id", placeholder="an object of the index")
k = kit.slider("Neighbours (k)", 1, 100, 16, key="cluster.k")
partial = st.toggle("Answer without missing shards", key="cluster.partial",
                    help="When a shard's worker is lost: the other shards' neighbours, with the missing shards named. "
                         "Off: an error naming them.")
if not object_id.strip():
    st.stop()
try:
    answer = sharded.query(id=object_id.strip(), k=k, partial=partial)
except ShardsMissing as exc:
    st.error(str(exc))
    if st.button("Re-open the lost shards on live workers", key="cluster.replace"):
        moved = sharded.replace_lost()
        st.success(f"Re-opened {', '.join(moved) or 'no shard'}; search again.")
    st.stop()
except UlisseError as exc:
    st.error(str(exc).splitlines()[0])
    st.stop()
if answer.missing:
    st.warning(f"Partial answer: {len(answer.missing)} of {len(sharded.manifest.shards)} shards did not answer "
               f"and their objects are missing: {answer.missing_text()}.")
table = answer.table
st.subheader(f"{len(table)} nearest neighbours of {object_id.strip()}")
if "source" in table.columns:
    cols = st.columns(min(6, max(1, len(table))))
    for i, (_, row) in enumerate(table.head(24).iterrows()):
        png = thumbnail(sharded, row["shard"], row["source"])
        if png is not None:
            cols[i % len(cols)].image(png, caption=f"{row['rank']}. {row['id']} · {kit.distance_text(row['distance'])}")
kit.show_table(table)
kit.download_buttons(table, f"{object_id.strip()}-neighbours", index=str(sharded.path),
                     meta={"prototype": object_id.strip(), "k": k, "dask": dask.strip(),
                           "missing_shards": answer.missing_text() or None}, key="cluster.download")
