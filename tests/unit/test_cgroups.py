"""Locating and reading container cgroups on fake trees: v1, v2, hybrid, the systemd driver, a
daemon in a container (mount roots other than "/"), and files that vanish."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.docker.cgroups import (
    CgroupMount,
    CgroupReader,
    files_for,
    find_by_id,
    parse_mountinfo,
    parse_proc_cgroup,
    read,
)

CID = "efa7cfe1a12e1236680db5d01372a419dd9c9375ece33c8c7848f67fdbb1c2e1"
MiB = 1024**2

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_MOUNTINFO = "25 20 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HYBRID_MOUNTINFO, [("/sys/fs/cgroup/cpu", 1, {"cpu"}), ("/sys/fs/cgroup/cpuacct", 1, {"cpuacct"}),
                            ("/sys/fs/cgroup/memory", 1, {"memory"}), ("/sys/fs/cgroup/unified", 2, set())]),
        (V2_MOUNTINFO, [("/sys/fs/cgroup", 2, set())]),
        ("30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
         [("/sys/fs/cgroup/cpu,cpuacct", 1, {"cpu", "cpuacct"})]),
        ("30 25 0:27 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n", [("/mnt/with space", 2, set())]),
        ("garbage\n", []),
    ],
    ids=["hybrid", "v2", "combined-cpu-cpuacct", "escaped-space", "garbage"],
)
def test_parse_mountinfo(text: str, expected: list[tuple[str, int, set[str]]]) -> None:
    assert [(m.mount_point, m.version, set(m.controllers)) for m in parse_mountinfo(text)] == expected


def test_parse_proc_cgroup() -> None:
    text = f"4:memory:/docker/{CID}\n2:cpu,cpuacct:/docker/{CID}\n1:name=systemd:/x\n0::/docker/{CID}\n"
    assert parse_proc_cgroup(text) == {
        "memory": f"/docker/{CID}", "cpu": f"/docker/{CID}", "cpuacct": f"/docker/{CID}",
        "name=systemd": "/x", "": f"/docker/{CID}",
    }


def write_v1(root: Path, relative: str, cpu_ns: int, usage: int, inactive: int, limit: int) -> None:
    cpu = root / "cpuacct" / relative.lstrip("/")
    memory = root / "memory" / relative.lstrip("/")
    cpu.mkdir(parents=True)
    memory.mkdir(parents=True)
    (cpu / "cpuacct.usage").write_text(f"{cpu_ns}\n")
    (memory / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (memory / "memory.stat").write_text(f"cache 10\ntotal_inactive_file {inactive}\nactive_file 3\n")
    (memory / "memory.limit_in_bytes").write_text(f"{limit}\n")


def write_v2(directory: Path, usage_usec: int, current: int, inactive: int, limit: str) -> None:
    directory.mkdir(parents=True)
    (directory / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n")
    (directory / "memory.current").write_text(f"{current}\n")
    (directory / "memory.stat").write_text(f"anon 1\ninactive_file {inactive}\nactive_file 9\n")
    (directory / "memory.max").write_text(f"{limit}\n")


def v1_mounts(root: Path, mount_root: str = "/") -> list[CgroupMount]:
    return [CgroupMount(str(root / "cpuacct"), mount_root, 1, frozenset({"cpuacct"})),
            CgroupMount(str(root / "memory"), mount_root, 1, frozenset({"memory"}))]


@pytest.mark.parametrize(
    "relative",
    [f"/docker/{CID}", f"/system.slice/docker-{CID}.scope"],
    ids=["cgroupfs-driver", "systemd-driver"],
)
def test_v1_by_pid_and_by_id_give_the_same_files_and_docker_stats_numbers(tmp_path: Path, relative: str) -> None:
    write_v1(tmp_path, relative, cpu_ns=5_000_000_000, usage=100 * MiB, inactive=30 * MiB, limit=256 * MiB)
    mounts = v1_mounts(tmp_path)
    by_path = files_for(mounts, {"cpuacct": relative, "memory": relative})
    by_id = find_by_id(mounts, CID)
    assert by_path == by_id and by_path is not None
    reading = read(by_path, read_at_seconds=42.0)
    assert reading.cpu_total_ns == 5_000_000_000
    assert reading.memory_used_bytes == 70 * MiB, "usage minus inactive file, as docker stats shows"
    assert reading.memory_limit_bytes == 256 * MiB
    assert reading.system_cpu_ns is None and reading.read_at_seconds == 42.0


@pytest.mark.parametrize(("limit", "expected"), [("max", None), (str(64 * MiB), 64 * MiB)], ids=["no-limit", "limit"])
def test_v2(tmp_path: Path, limit: str, expected: int | None) -> None:
    directory = tmp_path / "system.slice" / f"docker-{CID}.scope"
    write_v2(directory, usage_usec=2_500_000, current=50 * MiB, inactive=5 * MiB, limit=limit)
    mounts = [CgroupMount(str(tmp_path), "/", 2, frozenset())]
    files = files_for(mounts, {"": f"/system.slice/docker-{CID}.scope"})
    assert files == find_by_id(mounts, CID) and files is not None
    reading = read(files)
    assert (reading.cpu_total_ns, reading.memory_used_bytes, reading.memory_limit_bytes) == (2_500_000_000, 45 * MiB, expected)


def test_hybrid_hosts_read_the_v1_controllers(tmp_path: Path) -> None:
    write_v1(tmp_path, f"/docker/{CID}", 7, 10 * MiB, 0, 20 * MiB)
    write_v2(tmp_path / "unified" / "docker" / CID, 0, 0, 0, "max")  # no controllers there
    mounts = v1_mounts(tmp_path) + [CgroupMount(str(tmp_path / "unified"), "/", 2, frozenset())]
    files = files_for(mounts, {"cpuacct": f"/docker/{CID}", "memory": f"/docker/{CID}", "": f"/docker/{CID}"})
    assert files is not None and files.version == 1 and read(files).cpu_total_ns == 7


def test_a_mount_root_other_than_slash_maps_paths_below_it(tmp_path: Path) -> None:
    # A daemon in a container whose own cgroup namespace mounts /docker as the root.
    write_v1(tmp_path, CID, 9, 10 * MiB, 0, 20 * MiB)
    mounts = v1_mounts(tmp_path, mount_root="/docker")
    files = files_for(mounts, {"cpuacct": f"/docker/{CID}", "memory": f"/docker/{CID}"})
    assert files is not None and read(files).cpu_total_ns == 9
    assert files_for(mounts, {"cpuacct": f"/elsewhere/{CID}", "memory": f"/elsewhere/{CID}"}) is None


def test_the_reader_locates_once_reads_each_time_and_forgets_what_vanished(tmp_path: Path) -> None:
    write_v1(tmp_path, f"/docker/{CID}", 1_000, 10 * MiB, 0, 20 * MiB)
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text(f"4:memory:/docker/{CID}\n2:cpuacct:/docker/{CID}\n")
    reader = CgroupReader(v1_mounts(tmp_path), proc=str(proc))
    assert reader.locate(CID, 4242) is not None
    (tmp_path / "cpuacct" / "docker" / CID / "cpuacct.usage").write_text("2000\n")
    reading = reader.read(CID)
    assert reading is not None and reading.cpu_total_ns == 2000

    (tmp_path / "cpuacct" / "docker" / CID / "cpuacct.usage").unlink()  # the container is gone
    assert reader.read(CID) is None
    assert not reader.known(CID), "found again next time, e.g. after a restart"


def test_a_pid_of_another_process_is_not_trusted(tmp_path: Path) -> None:
    # In another pid namespace the same number is someone else: its paths do not name the container.
    write_v1(tmp_path, f"/docker/{CID}", 5, 10 * MiB, 0, 20 * MiB)
    proc = tmp_path / "proc"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "cgroup").write_text("4:memory:/\n2:cpuacct:/\n")
    reader = CgroupReader(v1_mounts(tmp_path), proc=str(proc))
    files = reader.locate(CID, 7)
    assert files is not None and files.cpu == tmp_path / "cpuacct" / "docker" / CID / "cpuacct.usage", "found by id"


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
def test_the_nodes_hierarchy_mounted_after_our_own_is_searched_and_read(tmp_path: Path, version: int) -> None:
    # The agent in a container: its own namespaced hierarchy (only itself) comes first in
    # mountinfo, the node's, bind-mounted at /host/sys/fs/cgroup, after it.
    own, node = tmp_path / "own", tmp_path / "node"
    if version == 1:
        write_v1(own, "/", 1, 1, 0, 1 * MiB)
        write_v1(node, f"/docker/{CID}", 11, 10 * MiB, 0, 20 * MiB)
        mounts = v1_mounts(own) + v1_mounts(node)
    else:
        write_v2(own, 1, 1, 0, "max")
        write_v2(node / "system.slice" / f"docker-{CID}.scope", 11, 10 * MiB, 0, "max")
        mounts = [CgroupMount(str(own), "/", 2, frozenset()), CgroupMount(str(node), "/../..", 2, frozenset())]
    files = find_by_id(mounts, CID)
    assert files is not None and str(files.cpu).startswith(str(node))
    assert read(files).cpu_total_ns in (11, 11_000)


def test_nothing_to_find_is_none(tmp_path: Path) -> None:
    reader = CgroupReader(v1_mounts(tmp_path))
    assert reader.locate(CID, None) is None and reader.read(CID) is None
    assert CgroupReader([]).locate(CID, 1) is None
