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
    assert hooks, "no hook specs found"
    for f in hooks:
        doc = inspect.getdoc(f)
        assert doc and len(doc.splitlines()) == 1, f"hook {f.__name__} needs a one-line docstring"


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


def test_wrong_hook_is_rejected_at_registration():
    plugin = types.ModuleType("bad_plugin")

    @ulisse.hookimpl
    def register_commands(cli, nonsense):  # an argument the spec does not have
        pass

    plugin.register_commands = register_commands
    with pytest.raises(PluginError):
        make_plugin_manager(load_entrypoints=False, plugins=[plugin])

    unknown = types.ModuleType("unknown_plugin")

    @ulisse.hookimpl
    def register_spaceships():
        pass

    unknown.register_spaceships = register_spaceships
    with pytest.raises(PluginError):
        make_plugin_manager(load_entrypoints=False, plugins=[unknown])


def test_plugin_installed_from_outside_the_repository(tmp_path, tiny_index):
    """A separate distribution, installed with pip, registers through the entry-point group and adds a verb."""
    import os
    import subprocess
    import sys
    import textwrap

    src = tmp_path / "ulisse-count"
    (src / "ulisse_count").mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "ulisse-count"
        version = "0.3.1"
        [project.entry-points.ulisse]
        count = "ulisse_count"
    """))
    (src / "ulisse_count" / "__init__.py").write_text(textwrap.dedent('''
        import click
        import ulisse

        @ulisse.hookimpl
        def register_commands(cli):
            @cli.command()
            @click.argument("index_dir")
            def count(index_dir):
                """Print the number of objects in an index."""
                click.echo(f"{len(ulisse.open_index(index_dir, device='cpu'))} objects")
    '''))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1")
    listed = subprocess.run([sys.executable, "-m", "ulisse", "plugins"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0 and "ulisse-count 0.3.1" in listed.stdout, listed.stdout + listed.stderr
    ran = subprocess.run([sys.executable, "-m", "ulisse", "count", str(tiny_index.path)], capture_output=True,
                         text=True, env=env)
    assert ran.returncode == 0 and ran.stdout.strip() == "24 objects", ran.stderr
    # without it on the path, the verb does not exist
    gone = subprocess.run([sys.executable, "-m", "ulisse", "count", str(tiny_index.path)], capture_output=True,
                          text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert gone.returncode == 2 and "No such command" in gone.stderr
