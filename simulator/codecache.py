"""CPython only: the firmware's modules compiled once per process, not at every boot.

A power cut forgets every firmware module (runner.forget_firmware) and the overlays unload
theirs, so a simulated day imports the same sources hundreds of times; where no bytecode is
written to disk (PYTHONDONTWRITEBYTECODE) each import compiled its source again. The source
is still read at every import and the cache is keyed by its bytes, so an edited file is
compiled anew; a code object runs the same however often it is executed."""

from __future__ import annotations

import importlib.machinery
from typing import Any

FIRMWARE_PACKAGES = ("boot", "main", "meter", "umqtt")  # as runner.FIRMWARE_MODULES
_CODE: dict[tuple[str, bytes], Any] = {}


class _CachedSource(importlib.machinery.SourceFileLoader):
    def source_to_code(self, data, path, *, _optimize=-1):  # type: ignore[override]
        key = (str(path), bytes(data))
        code = _CODE.get(key)
        if code is None:
            code = super().source_to_code(data, path, _optimize=_optimize)
            _CODE[key] = code
        return code


class FirmwareFinder:
    """A meta-path finder for the firmware's modules: the standard path finder's spec, its
    source loader swapped for the caching one."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> Any:
        if name.partition(".")[0] not in FIRMWARE_PACKAGES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        loader = getattr(spec, "loader", None)
        if type(loader) is importlib.machinery.SourceFileLoader:
            spec.loader = _CachedSource(loader.name, loader.path)
        return spec

    @staticmethod
    def invalidate_caches() -> None:
        pass
