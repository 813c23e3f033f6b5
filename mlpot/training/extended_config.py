"""A training config with one more top-level section: the ``ablation:`` and ``search:``
configs. How such a file is read (with ``key=value`` overrides and data paths taken beside
it) and written back, in one place for both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ..config import ConfigError, read_yaml_mapping, to_dict
from .config import TrainConfig, apply_overrides, resolve_data_paths


@dataclass(frozen=True)
class ExtendedConfig:
    """A base training config and one more section (its dataclass in the field named
    :attr:`SECTION`); subclasses declare the fields ``base`` and that one."""

    SECTION: ClassVar[str]
    base: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {**self.base.to_dict(), self.SECTION: to_dict(getattr(self, self.SECTION))}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def read_extended(source: str | Path | dict, section: str, overrides: list[str] | tuple[str, ...] = (),
                  ) -> tuple[TrainConfig, dict[str, Any], list[str]]:
    """Split a config (a YAML path or a mapping) into its training config and ``section``.

    Returns the training config with the overrides that are not the section's applied
    (relative data paths resolved beside the file), the section's mapping as written, and
    the section's own overrides (``<section>.key=value``), for the caller to apply.

    Raises:
        ConfigError: when ``section`` is missing, or for unknown keys or bad values outside it.
    """
    folder = Path(".")
    if isinstance(source, dict):
        data = dict(source)
    else:
        data = read_yaml_mapping(source)
        folder = Path(source).parent
    if section not in data:
        raise ConfigError(f"{section}: missing; a{'n' if section[0] in 'aeiou' else ''} {section} config is a "
                          f"training config with a '{section}:' section (see mlpot.{section}.config)")
    own = dict(data.pop(section) or {})
    ours = [o for o in overrides if o.startswith(f"{section}.")]
    data = apply_overrides(data, [o for o in overrides if not o.startswith(f"{section}.")])
    resolve_data_paths(data, folder)
    return TrainConfig.from_dict(data), own, ours
