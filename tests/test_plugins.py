"""The plugin system: hook specs documented, plugins validated, a throwaway plugin adds a verb."""

from __future__ import annotations

import inspect
import types

import click
import pytest
from click.testing import CliRunner

import ulisse
from ulisse import hookspecs
from ulisse.plugin_manager import PluginError, make_plugin_manager, plugin_info
from ulisse.registry import Config


def test_every_hook_is_documented():
    hooks = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "ulisse_spec")]
    assert len(hooks) >= 7, "no hook specs found"
    for f in hooks:
        doc = inspect.getdoc(f)
        assert doc, f"hook {f.__name__} has no docstring"
        assert len(doc.splitlines()[0]) > 20, f"hook {f.__name__} needs a one-line summary"
        assert "Example::" in doc, f"hook {f.__name__} needs an example"


def test_first_party_plugins_load_as_default_plugins_without_entry_points():
    from ulisse.plugin_manager import DEFAULT_PLUGINS, default_plugin_name

    pm = make_plugin_manager(load_entrypoints=True)
    assert "demo" in {p["name"] for p in plugin_info(pm)}
    bare = make_plugin_manager(load_entrypoints=False)
    names = {default_plugin_name(m) for m in DEFAULT_PLUGINS}
    assert {"builtins", "prototype", "anomalies", "sdss", "heads", "ui"} <= names
    assert names <= {n for n, p in bare.list_name_plugin() if p is not None}
    assert not bare.ulisse_failures, bare.ulisse_failures
    # an entry point naming a module already loaded as a default plugin is not registered twice
    modules = [getattr(p, "__name__", None) for p in pm.get_plugins()]
    assert len(modules) == len(set(modules))
    assert make_plugin_manager(load_entrypoints=False, load_defaults=False).get_plugins() == set()


def test_a_default_plugin_that_fails_to_import_is_recorded_like_any_other(monkeypatch):
    from ulisse import plugin_manager

    monkeypatch.setattr(plugin_manager, "DEFAULT_PLUGINS", ("ulisse._builtins", "ulisse.plugins.no_such_plugin"))
    pm = make_plugin_manager(load_entrypoints=False)
    info = {p["name"]: p for p in plugin_info(pm)}
    assert info["builtins"]["status"] == "loaded" and info["builtins"]["distribution"] == "ulisse"
    assert info["no_such_plugin"]["status"] == "failed" and "ModuleNotFoundError" in info["no_such_plugin"]["error"]


def test_throwaway_plugin_adds_a_verb():
    plugin = types.ModuleType("hello_plugin")

    @ulisse.hookimpl
    def register_commands(cli):
        @cli.command()
        @click.argument("name")
        def hello(name):
            """Say hello."""
            click.echo(f"hello {name}")

    plugin.register_commands = register_commands
    pm = make_plugin_manager(load_entrypoints=False, plugins=[plugin], load_defaults=False)
    group = click.Group("ulisse")
    pm.hook.register_commands(cli=group, config=Config())
    result = CliRunner().invoke(group, ["hello", "andromeda"])
    assert result.exit_code == 0 and result.output == "hello andromeda\n"
    assert plugin_info(pm)[0]["hooks"] == ["register_commands"]


def _bad_plugins():
    wrong_args = types.ModuleType("bad_plugin")

    @ulisse.hookimpl
    def register_commands(cli, nonsense):  # an argument the spec does not have
        pass

    wrong_args.register_commands = register_commands
    unknown = types.ModuleType("unknown_plugin")

    @ulisse.hookimpl
    def register_spaceships():
        pass

    unknown.register_spaceships = register_spaceships
    return wrong_args, unknown


def test_wrong_hook_is_reported_and_left_out():
    wrong_args, unknown = _bad_plugins()
    good = types.ModuleType("good_plugin")
    good.register_query_strategies = ulisse.hookimpl(lambda config: [])
    pm = make_plugin_manager(load_entrypoints=False, plugins=[wrong_args, unknown, good], load_defaults=False)
    info = {p["name"]: p for p in plugin_info(pm)}
    assert info["bad_plugin"]["status"] == "failed" and "nonsense" in info["bad_plugin"]["error"]
    assert info["unknown_plugin"]["status"] == "failed" and "register_spaceships" in info["unknown_plugin"]["error"]
    assert info["good_plugin"]["status"] == "loaded"
    with pytest.raises(PluginError):
        make_plugin_manager(load_entrypoints=False, plugins=[wrong_args], strict=True, load_defaults=False)


def test_a_hook_that_raises_is_disabled_and_the_others_still_answer(caplog):
    from ulisse.plugin_manager import call_hook, failed_plugins
    from ulisse.registry import QueryStrategy, query_strategies

    broken = types.ModuleType("broken_plugin")

    def boom(config):
        raise RuntimeError("kaput")

    broken.register_query_strategies = ulisse.hookimpl(boom)
    fine = types.ModuleType("fine_plugin")
    fine.register_query_strategies = ulisse.hookimpl(lambda config: [QueryStrategy("fine", "ok", run=None)])
    pm = make_plugin_manager(load_entrypoints=False, plugins=[broken, fine], load_defaults=False)
    assert set(query_strategies(pm)) == {"fine"}
    assert [f.name for f in failed_plugins(pm)] == ["broken_plugin"]
    assert "kaput" in failed_plugins(pm)[0].error
    assert call_hook(pm, "register_query_strategies", config=None)  # disabled: asked once, not again
    assert len(failed_plugins(pm)) == 1


def test_trace_logs_hook_calls(monkeypatch, caplog):
    import logging

    from ulisse.registry import query_strategies

    monkeypatch.setenv("ULISSE_TRACE_PLUGINS", "1")
    pm = make_plugin_manager(load_entrypoints=True)
    with caplog.at_level(logging.WARNING, logger="ulisse"):
        query_strategies(pm)
    assert any("hook register_query_strategies -> prototype" in r.getMessage() for r in caplog.records)


def _run(*args, env=None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ulisse", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})))


@pytest.mark.slow
def test_plugins_dir_and_a_broken_plugin_leave_the_other_verbs_working(tmp_path, tiny_index):
    import textwrap

    (tmp_path / "plugs").mkdir()
    (tmp_path / "plugs" / "hello.py").write_text(textwrap.dedent('''
        import click, ulisse

        @ulisse.hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                click.echo("hello from a file")
    '''))
    (tmp_path / "plugs" / "broken.py").write_text("import no_such_module_anywhere\n")
    (tmp_path / "plugs" / "raises.py").write_text(textwrap.dedent('''
        import ulisse

        @ulisse.hookimpl
        def register_commands(cli):
            raise RuntimeError("this plugin is broken")
    '''))
    ran = _run("--plugins-dir", tmp_path / "plugs", "hello")
    assert ran.returncode == 0 and ran.stdout == "hello from a file\n", ran.stderr
    listed = _run("--plugins-dir", tmp_path / "plugs", "plugins")
    assert listed.returncode == 0
    assert "broken" in listed.stdout and "FAILED" in listed.stdout and "no_such_module_anywhere" in listed.stdout
    assert "this plugin is broken" in listed.stdout
    info = _run("--plugins-dir", tmp_path / "plugs", "index", "info", tiny_index.path)
    assert info.returncode == 0 and "objects" in info.stdout, info.stderr
    query = _run("--plugins-dir", tmp_path / "plugs", "query", tiny_index.path, "--id", "obj001", "-k", "3")
    assert query.returncode == 0 and "obj" in query.stdout, query.stderr
    missing = _run("--plugins-dir", tmp_path / "nowhere", "plugins")
    assert missing.returncode == 1 and missing.stderr.startswith("ulisse: error: --plugins-dir")


@pytest.mark.slow
def test_plugin_installed_from_outside_the_repository(tmp_path, tiny_index):
    """A separate distribution, installed with pip, registers through the entry-point group and adds a verb."""
    from ulisse.testing import install_plugin_distribution

    target = install_plugin_distribution(tmp_path, "ulisse-count", "0.3.1", "ulisse_count", {"__init__.py": '''
        import click
        import ulisse

        @ulisse.hookimpl
        def register_commands(cli):
            @cli.command()
            @click.argument("index_dir")
            def count(index_dir):
                """Print the number of objects in an index."""
                click.echo(f"{len(ulisse.open_index(index_dir, device='cpu'))} objects")
    '''})
    listed = _run("plugins", env={"PYTHONPATH": str(target)})
    assert listed.returncode == 0 and "ulisse-count 0.3.1" in listed.stdout, listed.stdout + listed.stderr
    ran = _run("count", tiny_index.path, env={"PYTHONPATH": str(target)})
    assert ran.returncode == 0 and ran.stdout.strip() == "24 objects", ran.stderr
    gone = _run("count", tiny_index.path)  # without it on the path, the verb does not exist
    assert gone.returncode == 2 and "No such command" in gone.stderr


def test_plugin_api_docs_are_generated_from_the_hookspecs():
    from ulisse import docs

    text = docs.render()
    for f in docs.hooks():
        assert f"### `{f.__name__}(" in text
    assert docs.main(["--check"]) == 0, "docs/plugins.md is out of date: run python -m ulisse.docs"


def test_help_and_a_query_by_id_import_no_torch(tiny_index):
    """Every plugin's hooks load at start-up: none of them may pull in torch (seconds) for verbs that embed nothing."""
    code = (f"import sys\nfrom ulisse.cli import main\n"
            f"for argv in (['--help'], ['query', {str(tiny_index.path)!r}, '--id', 'obj001', '-k', '3']):\n"
            f"    try:\n        main(argv)\n    except SystemExit as exc:\n        assert exc.code == 0, exc.code\n"
            f"print('TORCH', 'torch' in sys.modules)\n")
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "TORCH False" in p.stdout, p.stdout[-500:]


@pytest.mark.slow
def test_hooks_receive_the_runs_config_from_the_global_options(tmp_path):
    import textwrap

    (tmp_path / "plugs").mkdir()
    (tmp_path / "plugs" / "where.py").write_text(textwrap.dedent('''
        import click, ulisse
        from ulisse.registry import ExportFormat, export_formats

        SEEN = []

        @ulisse.hookimpl
        def register_export_formats(config):
            SEEN.append(config)
            return []

        @ulisse.hookimpl
        def register_commands(cli, config):
            @cli.command()
            def where():
                export_formats()
                hook = SEEN[-1]
                click.echo(f"{config.device} {hook.device} {hook.cache_dir} {list(hook.plugins_dirs)} {hook.options}")
    '''))
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "ULISSE_CACHE_DIR": ""}
    ran = _run("-q", "--device", "cpu", "--plugins-dir", tmp_path / "plugs", "where", env=env)
    assert ran.returncode == 0, ran.stderr
    device, hook_device, cache, rest = ran.stdout.split(" ", 3)
    assert (device, hook_device) == ("cpu", "cpu") and cache == str(tmp_path / "xdg" / "ulisse")
    assert str(tmp_path / "plugs") in rest and "'quiet': True" in rest
    env = {"ULISSE_DEVICE": "cpu", "ULISSE_CACHE_DIR": str(tmp_path / "c")}
    ran = _run("--plugins-dir", tmp_path / "plugs", "where", env=env)
    assert ran.returncode == 0 and ran.stdout.split()[:3] == ["cpu", "cpu", str(tmp_path / "c")], ran.stderr


def test_the_runs_device_is_the_default_of_every_verbs_device_option(cli):
    """``ulisse --device cpu VERB`` gives the verb's ``--device`` its default; the verb's own still wins."""
    from ulisse.options import device_option
    from ulisse.registry import Config, current_config, use_config

    seen = []
    command = click.Command("probe", callback=lambda device: seen.append(device))
    command = device_option(command.callback)
    group = click.Group("g", commands=[click.command("probe")(command)])
    use_config(Config(device="cpu"))
    try:
        CliRunner().invoke(group, ["probe"])
        CliRunner().invoke(group, ["probe", "--device", "auto"])
    finally:
        use_config(None)
    assert seen == ["cpu", "auto"] and current_config().device in ("auto", "cpu", "cuda")


class _Extras:
    """A throwaway plugin adding an anomaly method and an export format to the process-wide manager."""

    @ulisse.hookimpl
    def register_anomaly_methods(self, config):
        import numpy as np

        from ulisse.registry import AnomalyMethod

        def norm(index, **options):
            return np.linalg.norm(np.asarray(index.all_vectors()), axis=1)

        return [AnomalyMethod("norm", "vector norm (test)", norm, uses_k=False)]

    @ulisse.hookimpl
    def register_export_formats(self, config):
        from ulisse.registry import ExportFormat

        return [ExportFormat("tsv", "tab-separated (test)", (".tsv",), "text/tab-separated-values",
                             write=lambda table, meta, extra: table.to_csv(sep="\t", index=False))]


@pytest.fixture()
def extras():
    from ulisse.plugin_manager import get_plugin_manager

    get_plugin_manager().register(_Extras(), name="extras-test")
    yield
    if get_plugin_manager().has_plugin("extras-test"):
        get_plugin_manager().unregister(name="extras-test")


def test_a_plugin_adds_an_anomaly_method_and_an_export_format(extras, tiny_index, cli, tmp_path):
    import numpy as np

    from ulisse.plugins.anomalies import rank_anomalies

    ranking = rank_anomalies(tiny_index, top=3, method="norm", progress=False)
    norms = np.linalg.norm(np.asarray(tiny_index.all_vectors()), axis=1)
    assert ranking.k is None and np.allclose(ranking.table["score"], np.sort(norms)[::-1][:3])
    out = tmp_path / "r.tsv"
    code, text, err = cli("anomalies", tiny_index.path, "--method", "norm", "--top", "2", "--format", "tsv",
                          "--output", out, "--device", "cpu")
    assert code == 0, err
    assert text.splitlines()[0].split("\t")[:3] == ["rank", "id", "score"] and len(text.splitlines()) == 3
    assert out.read_text() == text
    code, _, err = cli("anomalies", tiny_index.path, "--method", "nope")
    assert code == 2 and "norm" in err and "kth" in err
    code, listed, _ = cli("plugins")
    line = next(x for x in listed.splitlines() if x.startswith("extras-test"))
    assert "anomaly methods norm" in line and "export formats tsv" in line


def test_plugins_verb_says_who_provides_what(cli):
    import json

    code, out, _ = cli("plugins")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "encoders efficientnet_b0, lite0, timm" in lines["builtins"]
    assert "export formats table, csv, json, votable, fits, ecsv" in lines["builtins"]
    assert "anomaly methods kth, mean, iforest" in lines["anomalies"]
    assert "query strategies mean, union; pages Search; commands query" in lines["prototype"]
    code, out, _ = cli("plugins", "--json")
    info = {p["name"]: p for p in json.loads(out)}
    assert info["builtins"]["provides"]["encoders"] == ["efficientnet_b0", "lite0", "timm"]
    assert info["sdss"]["provides"]["commands"] == ["fetch", "sdss"]


class _PerObject:
    """A per-object set of an outside plugin: each id's length, and the rows it was asked for."""

    asked: list = []
    short = False  # answer one row too few (a bug in the plugin)

    @ulisse.hookimpl
    def register_derived_columns(self, config):
        import pandas as pd

        from ulisse.registry import DerivedColumns

        def compute(index, rows=None, checkpoint=None, **options):
            _PerObject.asked.append(rows)
            ids = [index.ids[r] for r in rows][: len(rows) - 1 if _PerObject.short else None]
            return pd.DataFrame({"id_length": [len(i) for i in ids]})

        return [DerivedColumns("idlen", "length of each id", compute, per_object=True, columns=("id_length",))]


def test_an_outside_per_object_set_computes_only_what_an_add_brings(tiny_index, survey, tmp_path):
    import shutil

    import ulisse
    from ulisse.plugin_manager import get_plugin_manager

    get_plugin_manager().register(_PerObject(), name="per-object-test")
    try:
        _PerObject.asked = []
        assert tiny_index.derived("idlen")["id_length"].tolist() == [len(i) for i in tiny_index.ids]
        folder = tmp_path / "more"
        folder.mkdir()
        for i in range(2):
            shutil.copy(survey / "cutouts" / f"obj{i + 1:03d}.png", folder / f"extra-{i}.png")
        tiny_index.add([folder], progress=False)
        n = len(tiny_index)
        assert tiny_index.derived("idlen")["id_length"].tolist()[-2:] == [7, 7]
        assert _PerObject.asked == [range(n - 2), range(n - 2, n)]
        hits = tiny_index.query("obj001", k=n - 1, where="id_length == 7")
        assert sorted(hits.table["id"]) == ["extra-0", "extra-1"]
        _PerObject.short = True
        with pytest.raises(ulisse.InputError, match=r"derived columns 'idlen': 0 rows for the 1 rows asked for"):
            folder2 = tmp_path / "one"
            folder2.mkdir()
            shutil.copy(survey / "cutouts" / "obj002.png", folder2 / "extra-2.png")
            tiny_index.add([folder2], progress=False)
            tiny_index.derived("idlen")
    finally:
        _PerObject.short = False
        get_plugin_manager().unregister(name="per-object-test")
