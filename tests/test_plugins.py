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
