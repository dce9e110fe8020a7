"""Conformance: every registered plugin passes the same checks, first-party or not (as timm tests every model).

For each plugin the process-wide manager loads (the default plugins, then the
entry-point group): every hook it implements is a documented hook spec; every
item it registers has a name and a description; every web page it registers
renders under Streamlit's AppTest on a small index; every verb it adds answers
``--help``; every set of derived columns it registers is recomputed once the
index's vectors change.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ulisse import hookspecs
from ulisse.plugin_manager import get_plugin_manager, make_plugin_manager
from ulisse.registry import PROVIDES, Config, item_name

PLUGINS = sorted(name for name, plugin in make_plugin_manager().list_name_plugin() if plugin is not None)
PAGE_TIMEOUT = 90


def _impl(pm, plugin: str, hook: str):
    return next((i for i in getattr(pm.hook, hook).get_hookimpls() if i.plugin_name == plugin), None)


def _items(pm, plugin: str, hook: str) -> list:
    """What ``plugin`` registers through ``hook``, asked directly (a failure here is the plugin's)."""
    impl = _impl(pm, plugin, hook) if hasattr(pm.hook, hook) else None
    if impl is None:
        return []
    given = {"config": Config()}
    return list(impl.function(**{a: given[a] for a in impl.argnames if a in given}) or [])


def _commands(pm, plugin: str) -> click.Group:
    group = click.Group("ulisse")
    impl = _impl(pm, plugin, "register_commands")
    if impl is not None:
        given = {"cli": group, "config": Config()}
        impl.function(**{a: given[a] for a in impl.argnames if a in given})
    return group


def _command_paths(group: click.Group, prefix=()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in sorted(group.commands.items()):
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
    return paths


def test_every_plugin_loaded():
    assert not get_plugin_manager().ulisse_failures, get_plugin_manager().ulisse_failures
    assert {"builtins", "prototype", "anomalies"} <= set(PLUGINS)


@pytest.mark.parametrize("name", PLUGINS)
def test_plugin_conforms(name, request, tmp_path):
    pm = get_plugin_manager()
    plugin = pm.get_plugin(name)
    assert plugin is not None, f"{name} is not loaded"

    # every hook it implements is a documented hook spec
    for caller in pm.get_hookcallers(plugin):
        spec = getattr(hookspecs, caller.name, None)
        assert spec is not None and hasattr(spec, "ulisse_spec"), f"{name}: {caller.name} is not a hook spec"
        doc = inspect.getdoc(spec) or ""
        assert len(doc.splitlines()[0]) > 20 and "Example::" in doc, f"hook {caller.name} is not documented"

    # every registered item has a name and a description, and no other plugin uses that name
    pages = []
    for hook in PROVIDES:
        for item in _items(pm, name, hook):
            assert item_name(item).strip(), f"{name}: an item of {hook} has no name"
            text = getattr(item, "description", None) or getattr(item, "label", None) or getattr(item, "script", None)
            assert str(text or "").strip(), f"{name}: {hook} item {item_name(item)!r} has no description"
            pages += [item] if hook == "register_ui_pages" else []

    # every page script exists and renders on a small index
    if pages:
        from streamlit.testing.v1 import AppTest

        index = request.getfixturevalue("survey_index")
        for page in pages:
            assert Path(page.script).is_file(), f"{name}: page {page.title}: no script {page.script}"
            at = AppTest.from_file(str(page.script), default_timeout=PAGE_TIMEOUT)
            at.session_state["index_path"] = str(index.path)
            at.run()
            assert not at.exception, (page.title, [e.message for e in at.exception])

    # every verb answers --help
    group = _commands(pm, name)
    for path in _command_paths(group):
        result = CliRunner().invoke(group, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output, result.exception)
        assert "Usage:" in result.output

    # derived columns are recomputed when the vectors change
    sets = [item.name for item in _items(pm, name, "register_derived_columns")]
    if sets:
        from ulisse.testing import make_survey

        index = request.getfixturevalue("tiny_index")
        for s in sets:
            assert len(index.derived(s)) == len(index) and index.derived_is_fresh(s)
        make_survey(tmp_path / "more", n_per_kind=1, seed=5, prefix="more")
        index.add([tmp_path / "more"], progress=False)
        for s in sets:
            assert not index.derived_is_fresh(s), f"{name}: {s} still fresh after an add"
            assert len(index.derived(s)) == len(index) and index.derived_is_fresh(s)
