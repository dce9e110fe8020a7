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


def test_every_hook_is_documented():
    hooks = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "ulisse_spec")]
    assert len(hooks) >= 7, "no hook specs found"
    for f in hooks:
        doc = inspect.getdoc(f)
        assert doc, f"hook {f.__name__} has no docstring"
        assert len(doc.splitlines()[0]) > 20, f"hook {f.__name__} needs a one-line summary"
        assert "Example::" in doc, f"hook {f.__name__} needs an example"


def test_first_party_plugins_come_from_entry_points():
    pm = make_plugin_manager(load_entrypoints=True)
    assert "demo" in {p["name"] for p in plugin_info(pm)}
    assert make_plugin_manager(load_entrypoints=False).get_plugins() == set()


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
    pm = make_plugin_manager(load_entrypoints=False, plugins=[plugin])
    group = click.Group("ulisse")
    pm.hook.register_commands(cli=group)
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
    pm = make_plugin_manager(load_entrypoints=False, plugins=[wrong_args, unknown, good])
    info = {p["name"]: p for p in plugin_info(pm)}
    assert info["bad_plugin"]["status"] == "failed" and "nonsense" in info["bad_plugin"]["error"]
    assert info["unknown_plugin"]["status"] == "failed" and "register_spaceships" in info["unknown_plugin"]["error"]
    assert info["good_plugin"]["status"] == "loaded"
    with pytest.raises(PluginError):
        make_plugin_manager(load_entrypoints=False, plugins=[wrong_args], strict=True)


def test_a_hook_that_raises_is_disabled_and_the_others_still_answer(caplog):
    from ulisse.plugin_manager import call_hook, failed_plugins
    from ulisse.registry import QueryStrategy, query_strategies

    broken = types.ModuleType("broken_plugin")

    def boom(config):
        raise RuntimeError("kaput")

    broken.register_query_strategies = ulisse.hookimpl(boom)
    fine = types.ModuleType("fine_plugin")
    fine.register_query_strategies = ulisse.hookimpl(lambda config: [QueryStrategy("fine", "ok", run=None)])
    pm = make_plugin_manager(load_entrypoints=False, plugins=[broken, fine])
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
