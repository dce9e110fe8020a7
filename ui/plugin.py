"""``ulisse ui``: serve the Streamlit web app (:mod:`ulisse.ui.app`) on this machine.

Example::

    ulisse ui ulisse-demo/hdf                         # http://127.0.0.1:8501
    ulisse ui ulisse-demo/hdf --port 8601
    ulisse ui --index survey-shards --dask tcp://scheduler:8786   # Cluster search on a sharded index

Options ulisse does not know are Streamlit's (``streamlit run --help``) and
pass through; they come after ulisse's defaults, so they win.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import click

import ulisse
from ulisse.ui import APP, DASK_ENV, INDEX_ENV, MAX_UPLOAD_MB

DEFAULT_OPTIONS = (
    "--server.address", "127.0.0.1",  # this machine only, unless told otherwise
    "--server.headless", "true",
    "--server.maxUploadSize", str(MAX_UPLOAD_MB),
    "--browser.gatherUsageStats", "false",
    "--client.toolbarMode", "minimal",
    "--server.fileWatcherType", "none",  # a served app, not one being edited: no watcher threads over site-packages
)


def streamlit_command(extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The ``python -m streamlit run`` command line of the app, Streamlit options ``extra`` last."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), *DEFAULT_OPTIONS, *extra]


def streamlit_env(index_dir: str | os.PathLike | None, dask: str | None = None) -> dict[str, str]:
    """The environment of the app: ``ULISSE_UI_INDEX`` names the index to open first, ``ULISSE_UI_DASK``
    the Dask cluster of Cluster search."""
    env = dict(os.environ)
    if index_dir is not None:
        env[INDEX_ENV] = str(Path(index_dir).expanduser().resolve())
    if dask:
        env[DASK_ENV] = dask
    return env


@ulisse.hookimpl
def register_commands(cli):
    """``ulisse ui``: the web app (Search, Expand, Anomalies and the pages plugins add)."""

    @cli.command("ui", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @click.option("--index", "index_dir", type=click.Path(file_okay=False), default=None,
                  help="index directory to open first (default: the first one under ./indexes)")
    @click.option("--dask", default=None, metavar="SCHEDULER",
                  help="search a sharded index on this Dask cluster (tcp://HOST:8786 or local:N): "
                       "the Cluster search page comes first")
    @click.option("--port", type=click.IntRange(1, 65535), default=None,
                  help="the port to serve on (Streamlit's --server.port; default 8501)")
    @click.option("--print-command", is_flag=True, help="print the streamlit command line instead of running it")
    @click.pass_context
    def ui(ctx, index_dir, dask, port, print_command):
        """Serve the web UI at http://127.0.0.1:8501 (ulisse ui [INDEX]; Streamlit options such as
        --server.address pass through)."""
        import importlib.util

        from ulisse.indexes import shards, store
        from ulisse.indexes.dask_search import parse_dask

        if importlib.util.find_spec("streamlit") is None:
            raise ulisse.UlisseError("the web UI needs Streamlit: pip install 'ulisse[ui]' (or pip install streamlit)")
        extra, given = split_extra(ctx.args)
        if given and index_dir is not None:
            raise ulisse.InputError(f"{given}: the index is given twice (as an argument and --index {index_dir})")
        index_dir = index_dir if given is None else given
        if port is not None:
            extra += ["--server.port", str(port)]
        if dask is not None:
            parse_dask(dask)  # a bad spec: say so now
        if index_dir is not None:  # no index there: say so now, not in the browser
            if shards.is_sharded(index_dir):
                shards.read_sharded(index_dir)
                if dask is None:
                    raise ulisse.InputError(f"--index {index_dir}: a sharded index is searched on Dask: "
                                            "give --dask tcp://HOST:8786 or --dask local:N")
            else:
                store.read_manifest(index_dir)
        command = streamlit_command(extra)
        if print_command:
            click.echo(shlex.join(command))
            return
        code = run_streamlit(command, streamlit_env(index_dir, dask))
        if code:  # the server's status is ulisse's (ctx.exit would be swallowed under standalone_mode=False)
            click.echo(f"ulisse: error: the web UI server stopped with status {code}", err=True)
            raise SystemExit(code)


def split_extra(args: list[str]) -> tuple[list[str], str | None]:
    """The Streamlit options among ``ulisse ui``'s extra arguments (``--name value`` or ``--name=value``), and
    the index given as an argument (``ulisse ui INDEX``), if any.

    Raises:
        InputError: more than one argument that is neither an option nor an option's value.
    """
    options, loose, i = [], [], 0
    while i < len(args):
        item = args[i]
        if item.startswith("-"):
            takes_value = "=" not in item and i + 1 < len(args) and not args[i + 1].startswith("-")
            options += args[i:i + 1 + takes_value]
            i += 1 + takes_value
        else:
            loose.append(item)
            i += 1
    if len(loose) > 1:
        raise ulisse.InputError(f"{' '.join(loose)}: one index at most (ulisse ui [INDEX] [--server.OPTION VALUE...])")
    return options, (loose[0] if loose else None)


def run_streamlit(command: list[str], env: dict[str, str]) -> int:
    """Run the server until it stops; SIGTERM is passed on to it, Ctrl-C lets it shut down cleanly."""
    proc = subprocess.Popen(command, env=env)
    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    except ValueError:  # not the main thread: no handler, the server is still ended with us
        previous = None
    try:
        while True:
            try:
                code = proc.wait()
                return 128 - code if code < 0 else code  # killed by a signal: the shell's convention
            except KeyboardInterrupt:  # the server got the Ctrl-C too and is stopping
                continue
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.kill()
