"""Named things edgekit imports on first use: its own (the builtins) and those installed plugins add.

A registry maps names to import paths, "module:attribute" or "module" alone (the module itself),
the spelling of entry points. edgekit's own entries are a plain dict held by the module that owns
them (`edgekit.cli.COMMANDS`, `edgekit.targets.specs.FAMILIES`, `edgekit.power.SENSORS`); an
installed distribution adds entries by declaring entry points in the registry's group:

    [project.entry-points."edgekit.commands"]
    hello = "edgekit_hello:hello"            # a click command: `edgekit hello`

    [project.entry-points."edgekit.target_families"]
    myboard = "edgekit_myboard"              # a module providing edgekit.targets.family.Family

    [project.entry-points."edgekit.power_sensors"]
    myboard = "edgekit_myboard:open_sensor"  # () -> a Sensor, or raises SensorUnavailable

Contract:
- `names()` lists the builtins in their order, then the plugins by name, reading installed
  metadata only: it imports nothing.
- A builtin wins over a plugin of the same name: the plugin is never listed nor loaded, so
  installing a package cannot replace edgekit's own `bench` command or `jetson` family. Of two
  plugins with one name, the first that importlib.metadata lists is used.
- `load(name)` imports the entry once and caches it. An unknown name raises KeyError naming the
  known ones. A plugin that fails to import raises EdgekitError naming the plugin and the
  distribution it came from (one error line in the CLI); a builtin that fails to import is a bug
  in edgekit and raises as it is.
- The plugins are read once per registry; the builtins dict is read at every call.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

COMMANDS_GROUP = "edgekit.commands"
TARGET_FAMILIES_GROUP = "edgekit.target_families"
POWER_SENSORS_GROUP = "edgekit.power_sensors"


class Registry:
    """The builtins `builtins` (name -> import path) plus the installed entry points of `group`;
    `what` names an entry in messages ("command", "target family", "power sensor")."""

    def __init__(self, group: str, builtins: dict[str, str], what: str = "name"):
        self.group = group
        self.builtins = builtins
        self.what = what
        self._plugins: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, Any] = {}

    def plugins(self) -> dict[str, EntryPoint]:
        """The group's installed entry points that no builtin shadows, by name (sorted)."""
        if self._plugins is None:
            found: dict[str, EntryPoint] = {}
            for entry_point in metadata.entry_points(group=self.group):
                found.setdefault(entry_point.name, entry_point)
            self._plugins = dict(sorted(found.items()))
        return {name: ep for name, ep in self._plugins.items() if name not in self.builtins}

    def names(self) -> list[str]:
        """Every name, builtins first in their order, then the plugins'; imports nothing."""
        return [*self.builtins, *self.plugins()]

    def __contains__(self, name: object) -> bool:
        return name in self.builtins or name in self.plugins()

    def load(self, name: str) -> Any:
        """The object `name` stands for, imported on the first call and cached."""
        if name in self._loaded:
            return self._loaded[name]
        if name in self.builtins:
            module, _, attr = self.builtins[name].partition(":")
            value = importlib.import_module(module)
            if attr:
                value = getattr(value, attr)
        else:
            entry_point = self.plugins().get(name)
            if entry_point is None:
                raise KeyError(f"unknown {self.what} '{name}' (known: {', '.join(self.names())})")
            try:
                value = entry_point.load()
            except Exception as e:  # any failure of the plugin's own code: its line, not a traceback
                dist = getattr(entry_point, "dist", None)
                raise EdgekitError(
                    f"the {self.what} plugin '{name}' ({entry_point.value}) from {distribution_of(entry_point)} "
                    f"failed to load: {type(e).__name__}: {e}",
                    f"reinstall {dist.name} or uninstall it (pip uninstall {dist.name})" if dist is not None
                    else "uninstall the package that declares it") from e
        self._loaded[name] = value
        return value

    def describe(self, name: str) -> str:
        """Where an entry comes from, for messages: 'edgekit' or the plugin's distribution."""
        entry_point = None if name in self.builtins else self.plugins().get(name)
        return "edgekit" if entry_point is None else distribution_of(entry_point)


def distribution_of(entry_point: EntryPoint) -> str:
    """'name version' of the distribution that declared an entry point, as far as metadata says."""
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "an unknown distribution"
    return f"{dist.name} {dist.version}"
