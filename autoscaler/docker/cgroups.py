"""CPU and memory of containers read straight from their cgroup files: a few microseconds per
replica, against the Docker API's one-second stats tick.

Where a container's files are is found, never guessed: from `/proc/<pid>/cgroup` (its path in
each hierarchy) and `/proc/self/mountinfo` (where each hierarchy is mounted, and from which root),
so cgroup v1 and v2, the cgroupfs and systemd drivers, and hybrid hosts all work the same way.
When the pid is not visible (the daemon in its own pid namespace, with /sys/fs/cgroup mounted
read-only) the mounted hierarchy is searched for a directory named after the container's id.
What cannot be found or read is None, and the caller asks the Docker API instead.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from autoscaler.engine.ports import StatsReading

# How deep the search by id goes below a hierarchy's mount point: docker/<id> (cgroupfs) and
# system.slice/docker-<id>.scope (systemd) are at depth 2; nested set-ups add a level or two.
SEARCH_DEPTH = 5
# Above this, memory.limit_in_bytes means "no limit" (v1 writes PAGE_COUNTER_MAX pages).
UNLIMITED_BYTES = 1 << 62


@dataclass(frozen=True)
class CgroupMount:
    mount_point: str
    root: str  # the hierarchy's path that is mounted there ("/" on a host)
    version: int  # 1 or 2
    controllers: frozenset[str]  # v1: cpuacct, memory, ...; v2: empty


@dataclass(frozen=True)
class CgroupFiles:
    """Where one container's numbers are."""

    version: int
    cpu: Path  # v1 cpuacct.usage (ns); v2 cpu.stat (usage_usec)
    memory_usage: Path  # v1 memory.usage_in_bytes; v2 memory.current
    memory_stat: Path  # inactive file pages, subtracted as `docker stats` does
    memory_limit: Path  # v1 memory.limit_in_bytes; v2 memory.max


def parse_mountinfo(text: str) -> list[CgroupMount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, super_options = tail[0], tail[2]
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup2":
            mounts.append(CgroupMount(mount_point, root, 2, frozenset()))
        elif fstype == "cgroup":
            controllers = frozenset(o for o in super_options.split(",") if o in ("cpuacct", "memory", "cpu"))
            if controllers:
                mounts.append(CgroupMount(mount_point, root, 1, controllers))
    return mounts


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """controller -> path for v1 lines ("2:cpuacct:/docker/<id>"); "" -> path for v2 ("0::/...")."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _within(mount: CgroupMount, path: str) -> Path | None:
    """The directory of hierarchy path `path` under this mount, if the mount shows it."""
    root = mount.root.rstrip("/")
    if root and not (path == root or path.startswith(root + "/")):
        return None
    return Path(mount.mount_point + path[len(root):])


def files_for(mounts: list[CgroupMount], paths: dict[str, str]) -> CgroupFiles | None:
    """The files of a cgroup given its path per hierarchy. v1 controllers win on hybrid hosts,
    where the engine accounts to them and the unified hierarchy has no controllers."""
    cpu_mount = next((m for m in mounts if m.version == 1 and "cpuacct" in m.controllers), None)
    memory_mount = next((m for m in mounts if m.version == 1 and "memory" in m.controllers), None)
    if cpu_mount and memory_mount and "cpuacct" in paths and "memory" in paths:
        cpu_dir = _within(cpu_mount, paths["cpuacct"])
        memory_dir = _within(memory_mount, paths["memory"])
        if cpu_dir is not None and memory_dir is not None:
            return CgroupFiles(1, cpu_dir / "cpuacct.usage", memory_dir / "memory.usage_in_bytes",
                               memory_dir / "memory.stat", memory_dir / "memory.limit_in_bytes")
    unified = next((m for m in mounts if m.version == 2), None)
    if unified is not None and "" in paths:
        directory = _within(unified, paths[""])
        if directory is not None and (directory / "cpu.stat").exists():
            return CgroupFiles(2, directory / "cpu.stat", directory / "memory.current",
                               directory / "memory.stat", directory / "memory.max")
    return None


def find_by_id(mounts: list[CgroupMount], container_id: str) -> CgroupFiles | None:
    """Searches the mounted hierarchies for the directory named after the container."""
    found: dict[str, str] = {}
    # Only the mounts it was found under: an agent in a container sees its own namespaced
    # hierarchy first and the node's, mounted elsewhere, after it.
    found_in: list[CgroupMount] = []
    for mount in mounts:
        key = "" if mount.version == 2 else ("memory" if "memory" in mount.controllers else "cpuacct")
        if key in found or (mount.version == 1 and not mount.controllers & {"memory", "cpuacct"}):
            continue
        directory = _search(Path(mount.mount_point), container_id, SEARCH_DEPTH)
        if directory is not None:
            relative = mount.root.rstrip("/") + "/" + str(directory.relative_to(mount.mount_point))
            for controller in (mount.controllers & {"memory", "cpuacct"}) if mount.version == 1 else {""}:
                found[controller] = relative
            found_in.append(mount)
    return files_for(found_in, found) if found else None


def _search(directory: Path, container_id: str, depth: int) -> Path | None:
    try:
        entries = [e for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return None
    for entry in entries:
        if container_id in entry.name:
            return Path(entry.path)
    if depth <= 1:
        return None
    for entry in entries:
        hit = _search(Path(entry.path), container_id, depth - 1)
        if hit is not None:
            return hit
    return None


def read(files: CgroupFiles, read_at_seconds: float | None = None) -> StatsReading:
    """One reading. Raises OSError or ValueError when the files are gone or unreadable."""
    if files.version == 1:
        cpu_ns = int(files.cpu.read_text())
        inactive_key = "total_inactive_file"
    else:
        cpu_ns = _stat_value(files.cpu.read_text(), "usage_usec") * 1000
        inactive_key = "inactive_file"
    usage = int(files.memory_usage.read_text())
    inactive = _stat_value(files.memory_stat.read_text(), inactive_key)
    limit_text = files.memory_limit.read_text().strip()
    limit = None if limit_text == "max" or int(limit_text) >= UNLIMITED_BYTES else int(limit_text)
    return StatsReading(
        cpu_total_ns=cpu_ns,
        system_cpu_ns=None,  # CPU % comes from the wall time between two of our readings
        online_cpus=os.cpu_count() or 1,
        read_at_seconds=time.time() if read_at_seconds is None else read_at_seconds,
        memory_used_bytes=usage - inactive if inactive < usage else usage,
        memory_limit_bytes=limit,
    )


def _stat_value(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def host_mounts(proc: str = "/proc") -> list[CgroupMount]:
    try:
        return parse_mountinfo((Path(proc) / "self" / "mountinfo").read_text())
    except OSError:
        return []


class CgroupReader:
    """Finds each container's files once and reads them every cycle (one per service, so that
    forgetting one service's gone replicas never drops another's)."""

    def __init__(self, mounts: list[CgroupMount], proc: str = "/proc") -> None:
        self._proc = Path(proc)
        self.mounts = mounts
        self._files: dict[str, CgroupFiles | None] = {}  # container id -> files (None: not here)

    def known(self, container_id: str) -> bool:
        return container_id in self._files

    @property
    def available(self) -> bool:
        return bool(self.mounts)

    def locate(self, container_id: str, pid: int | None) -> CgroupFiles | None:
        if container_id in self._files:
            return self._files[container_id]
        files = None
        if pid:
            try:
                paths = parse_proc_cgroup((self._proc / str(pid) / "cgroup").read_text())
            except OSError:
                paths = {}
            # Our own pid namespace may show a different process under that pid: trust the
            # paths only if they name the container.
            if any(container_id in path for path in paths.values()):
                files = files_for(self.mounts, paths)
        if files is None:
            files = find_by_id(self.mounts, container_id)
        if files is not None:
            try:
                read(files)
            except (OSError, ValueError):
                files = None
        self._files[container_id] = files
        return files

    def read(self, container_id: str) -> StatsReading | None:
        files = self._files.get(container_id)
        if files is None:
            return None
        try:
            return read(files)
        except (OSError, ValueError):
            del self._files[container_id]  # gone or restarted: find it again next time
            return None

    def forget(self, keep: set[str]) -> None:
        """Drops what it knows of containers not in `keep` (memory stays bounded)."""
        for container_id in [c for c in self._files if c not in keep]:
            del self._files[container_id]
