"""What a plan runs on: parse a hardware description into numbered device instances.

String form: items joined by ``+``, each ``[N x] DEVICE[:CORES]``, for example
``"2 x H100-SXM + cpu:16"``, ``"1 x NeuPIMs"`` or ``"8xH100"``.  ``:CORES`` sizes a CPU host.
TOML form (a file path or TOML text): either ``hardware = "<string form>"`` or a list of
``[[devices]]`` tables with ``name``, optional ``count`` and ``cores``.

Instances are numbered per kind (gpu0, gpu1, npu0, cpu0, ...).  A description without any CPU
gets one implicit single-core host, so tool operators always have a worker.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .specs import DeviceSpec, UnknownSpecError, device

_ITEM = re.compile(r"^(?:(?P<count>\d+)\s*[x×*]\s*)?(?P<name>[A-Za-z][\w.\-]*)(?::(?P<cores>\d+))?$")


class HardwareConfigError(ValueError):
    """A hardware description that cannot be parsed or names an unknown device."""


@dataclass(frozen=True)
class DeviceInstance:
    id: str
    spec: DeviceSpec

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def simulated(self) -> bool:
        return self.spec.simulated

    @property
    def cores(self) -> int:
        return self.spec.cores


@dataclass(frozen=True)
class Hardware:
    devices: tuple[DeviceInstance, ...]

    @property
    def cpu_workers(self) -> int:
        """Total CPU cores available to tool operators."""
        return sum(d.cores for d in self.devices if d.kind == "cpu")

    @property
    def accelerators(self) -> tuple[DeviceInstance, ...]:
        """Devices that run LLM operators (everything but plain CPU hosts)."""
        return tuple(d for d in self.devices if d.kind != "cpu" or d.spec.backend != "roofline")

    @property
    def simulated(self) -> bool:
        return any(d.simulated for d in self.devices)

    def __getitem__(self, device_id: str) -> DeviceInstance:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(f"no device {device_id!r}; have {', '.join(d.id for d in self.devices)}")

    def describe(self) -> str:
        """Canonical string form, which parses back to the same hardware."""
        groups: list[tuple[str, int, int]] = []
        for d in self.devices:
            key = (d.spec.name, d.cores if d.kind == "cpu" else 0)
            if groups and groups[-1][:2] == key:
                groups[-1] = (*key, groups[-1][2] + 1)
            else:
                groups.append((*key, 1))
        return " + ".join(f"{n} x {name}" + (f":{cores}" if cores else "") for name, cores, n in groups)


def _build(items: Iterable[tuple[str, int, int | None]]) -> Hardware:
    counters: dict[str, int] = {}
    devices = []
    for name, count, cores in items:
        if count < 1:
            raise HardwareConfigError(f"device count for {name!r} must be at least 1")
        try:
            spec = device(name, cores)
        except UnknownSpecError as exc:
            raise HardwareConfigError(str(exc)) from None
        except ValueError as exc:
            raise HardwareConfigError(f"{name}:{cores}: {exc}") from None
        if spec.kind == "cpu" and spec.cores < 1:
            raise HardwareConfigError(f"{name}: a CPU needs at least one core")
        for _ in range(count):
            n = counters.get(spec.kind, 0)
            counters[spec.kind] = n + 1
            devices.append(DeviceInstance(f"{spec.kind}{n}", spec))
    if not devices:
        raise HardwareConfigError("hardware description lists no devices")
    if "cpu" not in counters:
        devices.append(DeviceInstance("cpu0", device("cpu", 1)))
    return Hardware(tuple(devices))


def _parse_string(text: str) -> Hardware:
    items = []
    for raw in text.split("+"):
        match = _ITEM.match(raw.strip())
        if not match:
            raise HardwareConfigError(
                f"cannot parse {raw.strip()!r} in {text!r}; expected '[N x] DEVICE[:CORES]'"
            )
        cores = match["cores"]
        items.append((match["name"], int(match["count"] or 1), int(cores) if cores else None))
    return _build(items)


def _parse_toml(data: dict, origin: str) -> Hardware:
    if "hardware" in data:
        return _parse_string(str(data["hardware"]))
    entries = data.get("devices")
    if not isinstance(entries, list):
        raise HardwareConfigError(f"{origin}: expected a 'hardware' string or [[devices]] tables")
    items = []
    for entry in entries:
        if "name" not in entry:
            raise HardwareConfigError(f"{origin}: a [[devices]] table lacks 'name'")
        items.append((entry["name"], int(entry.get("count", 1)), entry.get("cores")))
    return _build(items)


def parse(source: str | Path) -> Hardware:
    """Parse a hardware description string, TOML text, or the path of a TOML file."""
    if isinstance(source, Path) or source.strip().endswith(".toml"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise HardwareConfigError(f"hardware file {str(path)!r} does not exist")
        try:
            return _parse_toml(tomllib.loads(path.read_text()), str(path))
        except tomllib.TOMLDecodeError as exc:
            raise HardwareConfigError(f"{path}: {exc}") from None
    if "=" in source:
        try:
            return _parse_toml(tomllib.loads(source), "hardware TOML")
        except tomllib.TOMLDecodeError as exc:
            raise HardwareConfigError(f"hardware TOML: {exc}") from None
    if not source.strip():
        raise HardwareConfigError("empty hardware description")
    return _parse_string(source)
