"""_estimate on fake /proc trees: planted duplicates and zero pages, vanishing processes, unreadable memory, sampling."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import builtins
import errno
import json
import math
import random
import struct
import subprocess
import zlib

import pytest

from ansible_collections.samepage.ksm.plugins.module_utils import _estimate

PAGE = 4096
BASE = 0x400000
PRESENT, FILE, EXCL = 1 << 63, 1 << 61, 1 << 56


def content(tag):
    """A page whose bytes are the tag repeated (tag None: a zero page)."""
    if tag is None:
        return b"\0" * PAGE
    word = (b"%-16s" % tag.encode())[:16]
    return word * (PAGE // 16)


def plant(proc, pid, pages, cgroup="0::/system.slice/app.service\n", comm="app", maps_extra="", status=True):
    """A fake /proc/PID: one private anonymous mapping at BASE with the given pages.

    pages: list of (tag, flags) - tag None is a zero page; flags are pagemap bits (PRESENT|EXCL for a
    normal anonymous page).
    """
    base = proc / str(pid)
    base.mkdir(parents=True)
    end = BASE + len(pages) * PAGE
    (base / "maps").write_text("%x-%x rw-p 00000000 00:00 0 \n%s" % (BASE, end, maps_extra))
    with open(base / "pagemap", "wb") as handle:
        handle.seek(BASE // PAGE * 8)
        for index, (_tag, flags) in enumerate(pages):
            handle.write(struct.pack("<Q", flags | (0x1000 + index if flags & PRESENT else 0)))
    with open(base / "mem", "wb") as handle:
        handle.seek(BASE)
        for tag, _flags in pages:
            handle.write(content(tag))
    if status:
        (base / "status").write_text("Name:\t%s\nVmSize:\t  10000 kB\nRssAnon:\t  %d kB\n" % (comm, len(pages) * 4 + 2048))
    (base / "cgroup").write_text(cgroup)
    (base / "cmdline").write_bytes(b"/usr/bin/" + comm.encode() + b"\0--serve\0")
    (base / "comm").write_text(comm + "\n")
    return base


def anon(*tags):
    return [(t, PRESENT | EXCL) for t in tags]


def run(proc, **kwargs):
    selector = _estimate.Selector(**kwargs.pop("select", {}))
    candidates, denied = _estimate.find_candidates(str(proc), selector)
    kwargs.setdefault("size", PAGE)
    kwargs.setdefault("mem_total", _estimate.read_mem_total(str(proc / "meminfo")))
    return _estimate.estimate(candidates, proc_path=str(proc), **kwargs), denied


@pytest.fixture
def proc(tmp_path):
    path = tmp_path / "proc"
    path.mkdir()
    (path / "meminfo").write_text("MemTotal:       1024 kB\n")
    return path


def test_planted_duplicates_and_zero_pages(proc):
    # X three times, Y twice, zero pages twice (exclusive), unique pages once each.
    plant(proc, 100, anon("X", "Y", "Z", None, "U1"), comm="web")
    plant(proc, 200, anon("X", "Y", None, "U2", "X")
          + [("S", PRESENT | FILE | EXCL),     # a file page in a private mapping: not anonymous
             (None, PRESENT),                  # the shared zero page: costs nothing
             ("N", 0)],                        # not present
          comm="db", cgroup="0::/libpod_parent/libpod-%s\n" % ("ab" * 32))
    result, _denied = run(proc, use_zero_pages=True)
    assert result["candidates"] == 2 and result["scanned_processes"] == 2
    assert result["scanned_pages"] == 10
    assert result["zero_pages"] == 2 and result["shared_zero_pages"] == 1
    assert result["duplicate_pages"] == 5             # X x3, Y x2
    assert result["saving_pages"] == 2 + 1 + 2        # X, Y, both zero pages
    assert result["saving_bytes"] == 5 * PAGE
    assert result["sample"]["final"] == 1 and result["complete"] is True and result["saving_stderr_pages"] == 0
    groups = {g["kind"]: g for g in result["groups"]}
    assert groups["container"]["runtime"] == "podman" and groups["container"]["id"] == "ab" * 32
    # X: 2 of 3 copies in the container -> 2/3 of X's saving 2; Y: half of 1; one zero page of 2.
    assert groups["container"]["saving_pages"] == round(2 * 2 / 3 + 0.5 + 1)
    assert groups["unit"]["id"] == "app.service" and groups["unit"]["scanned_pages"] == 5
    assert sum(g["saving_pages"] for g in result["groups"]) == pytest.approx(5, abs=1)
    assert result["saving_percent_of_ram"] == round(100.0 * 5 * PAGE / (1024 * 1024), 2) == 1.95
    without, _denied = run(proc, use_zero_pages=False)
    assert without["saving_pages"] == 2 + 1 + 1       # zero pages merge into one KSM page


def test_max_page_sharing_caps_each_ksm_page(proc):
    plant(proc, 100, anon(*["X"] * 5))
    result, _denied = run(proc, max_page_sharing=2)
    assert result["saving_pages"] == 5 - math.ceil(5 / 2)
    assert _estimate.saving_of(1000, 256) == 1000 - 4


def test_vanished_and_partly_unmapped_processes(proc):
    plant(proc, 100, anon("X", "X"))
    gone = plant(proc, 200, anon("X"))
    # the mapping shrank after maps was read: mem ends early, the missing page is unreadable
    shrunk = plant(proc, 300, anon("X", "Y", "Y"))
    with open(shrunk / "mem", "r+b") as handle:
        handle.truncate(BASE + 2 * PAGE)
    selector = _estimate.Selector()
    candidates, _denied = _estimate.find_candidates(str(proc), selector)
    assert [c["pid"] for c in candidates] == [100, 200, 300]
    for name in ("maps", "pagemap", "mem"):
        (gone / name).unlink()              # exits between listing and scanning
    result = _estimate.estimate(candidates, proc_path=str(proc), size=PAGE)
    assert result["vanished_processes"] == 1 and result["scanned_processes"] == 2
    assert result["unreadable_pages"] == 1
    assert result["scanned_pages"] == 4                 # X X | X Y
    assert result["saving_pages"] == 2                  # three X copies


def test_unreadable_memory_is_counted_not_fatal(proc, monkeypatch):
    plant(proc, 100, anon("X", "X"))
    plant(proc, 200, anon("X", "X"))
    real_open = builtins.open

    def guarded(path, *args, **kwargs):
        if str(path).endswith("/200/mem"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    result, _denied = run(proc)
    assert result["unreadable_processes"] == 1 and result["scanned_processes"] == 1
    assert result["saving_pages"] == 1


def test_kernel_threads_small_processes_and_special_mappings_are_skipped(proc):
    plant(proc, 2, anon("X"), status=False).joinpath("status").write_text("Name:\tkthreadd\n")
    plant(proc, 100, anon("X", "X"), maps_extra="7fff0000-7fff1000 r--p 00000000 00:00 0 [vvar]\n"
          "7fff2000-7fff3000 rw-s 00000000 00:05 1 /dev/shm/x\n")
    assert list(_estimate.parse_maps((proc / "100" / "maps").read_text().splitlines())) == [(BASE, BASE + 2 * PAGE)]
    result, _denied = run(proc)
    assert result["candidates"] == 1
    result, _denied = run(proc, **{"select": {"min_bytes": 64 << 20}})
    assert result["candidates"] == 0 and result["saving_pages"] == 0 and result["cpu_seconds_per_gib"] is None


def test_selectors(proc):
    plant(proc, 100, anon("X"), comm="mysqld", cgroup="0::/system.slice/mariadb.service\n")
    plant(proc, 200, anon("X"), comm="httpd", cgroup="0::/system.slice/apache2.service/worker\n")
    plant(proc, 300, anon("X"), comm="redis", cgroup="0::/libpod_parent/libpod-%s\n" % ("cd" * 32))
    plant(proc, 400, anon("X"), comm="lxcinit", cgroup="0::/lxc.payload.web01\n")

    def pids(**select):
        return [c["pid"] for c in _estimate.find_candidates(str(proc), _estimate.Selector(**select))[0]]

    assert pids() == [100, 200, 300, 400]
    assert pids(units=["mariadb"]) == [100]
    assert pids(units=["apache2.service"]) == [200]
    assert pids(cgroups=["/system.slice"]) == [100, 200]
    assert pids(cgroups=["/system.slice/apache2.service"]) == [200]
    assert pids(containers=["cd" * 6]) == [300]
    assert pids(containers=["web01"]) == [400]
    assert pids(command=r"^/usr/bin/(mysqld|redis) ") == [100, 300]
    assert pids(pids=[200], units=["mariadb"]) == [100, 200]
    assert pids(exclude=[100]) == [200, 300, 400]


def test_sampled_table_stays_bounded_and_unbiased():
    """20000 contents with 2 copies each and one content with 5000 copies in runs, in a 1024-entry table."""
    rng = random.Random(7)
    keys = [rng.getrandbits(64) for _index in range(20000)]
    heavy = rng.getrandbits(64)     # arrives late, in two runs (a buffer filled with one pattern)
    stream = keys + [heavy] * 2500 + keys + [heavy] * 2500
    exact = 20000 + _estimate.saving_of(5000, 256)
    estimates = []
    for seed in range(5):
        rng = random.Random(seed)
        salt = rng.getrandbits(32)      # a different hash function per run
        table = _estimate.ContentTable(max_entries=1024)
        for key in stream:
            crc = (key ^ salt) & 0xFFFFFFFF
            table.page(crc, struct.pack("<Q", key), "g")
            assert table.size <= 1024
        assert table.sample >= 32
        saving, _dup, variance, _groups = table.totals(256)
        estimates.append(saving)
        assert 0 < variance ** 0.5 < 0.05 * exact       # the reported standard error is of the right size
    for value in estimates:
        assert abs(value - exact) / exact < 0.10, estimates
    mean = sum(estimates) / len(estimates)
    assert abs(mean - exact) / exact < 0.05, estimates


def test_a_content_repeated_early_is_kept_exactly_when_the_table_shrinks():
    table = _estimate.ContentTable(max_entries=64, heavy=8)
    pattern = 0x1234567800000001      # CRC part odd: outside every slice but the first
    for _copy in range(100):
        table.add(pattern, "g")
    for key in range(1, 1000):
        crc = (key * 2654435761) & 0xFFFFFFFF
        table.page(crc, b"%d" % key, "g")
    assert table.sample > 1
    assert table.counts[pattern] == 100 and table.weight[pattern] == 1
    assert table.wants(pattern & 0xFFFFFFFF)


def test_a_run_of_one_content_after_the_table_filled_is_counted_exactly():
    table = _estimate.ContentTable(max_entries=64, heavy=8)
    for key in range(1, 5000):
        table.page((key * 2654435761) & 0xFFFFFFFF, b"%d" % key, "g")
    assert table.sample >= 64
    crc = 0x7FFFFFFF                 # outside the slice
    for _copy in range(300):
        table.page(crc, b"pattern", "g")
    key = [k for k in table.counts if k & 0xFFFFFFFF == crc]
    assert len(key) == 1 and table.counts[key[0]] == 300 and table.weight[key[0]] == 1


def test_smaps_skips_mappings_without_anonymous_memory(proc):
    base = plant(proc, 100, anon("X", "X"))
    end = BASE + 2 * PAGE
    # a terabyte reservation with nothing in it, listed first: never walked
    (base / "smaps").write_text(
        "7f0000000000-7f0100000000 ---p 00000000 00:00 0 \nSize:  1073741824 kB\nAnonymous:  0 kB\n"
        "%x-%x rw-p 00000000 00:00 0 \nSize:  8 kB\nRss:  8 kB\nAnonymous:  8 kB\nVmFlags: rd wr mr mw me ac\n"
        % (BASE, end))
    with open(base / "smaps", "rb") as handle:
        assert list(_estimate.parse_maps(handle, smaps=True)) == [(BASE, end)]
    result, _denied = run(proc)
    assert result["saving_pages"] == 1 and result["scanned_pages"] == 2


def test_kpageflags_tells_a_merged_zero_page_from_the_kernel_zero_page(proc):
    # pages 0-1: KSM pages holding zeros (merged with use_zero_pages off); page 2: the shared zero page
    plant(proc, 100, [(None, PRESENT), (None, PRESENT), (None, PRESENT), ("X", PRESENT | EXCL)])
    with open(proc / "kpageflags", "wb") as handle:
        for index, flags in enumerate([1 << 21, 1 << 21, 1 << 24]):
            handle.seek((0x1000 + index) * 8)
            handle.write(struct.pack("<Q", flags))
    result, _denied = run(proc, use_zero_pages=True)
    assert result["zero_pages"] == 2 and result["shared_zero_pages"] == 1 and result["saving_pages"] == 2
    (proc / "kpageflags").unlink()          # not root: PFNs unknown, every shared zero page is skipped
    result, _denied = run(proc, use_zero_pages=True)
    assert result["zero_pages"] == 0 and result["shared_zero_pages"] == 3


@pytest.mark.parametrize("version", ["2.7.18", "3.6.15"])
def test_runs_on_old_target_interpreters(tmp_path, proc, old_target, version):
    """The whole estimate (and the group attribution) on the Pythons of EL7 and EL8, on a fake /proc."""
    python, lib = old_target(version)
    plant(proc, 100, anon("X", "Y", None, "U1") + [(None, PRESENT)], cgroup="0::/libpod_parent/libpod-%s\n" % ("ef" * 32))
    plant(proc, 200, anon("X", "Y", "X", None) + [("S", PRESENT | FILE | EXCL)])
    code = (
        "import json, sys\n"
        "sys.path.insert(0, %r)\n"
        "from ansible_collections.samepage.ksm.plugins.module_utils import _estimate as e\n"
        "c, d = e.find_candidates(%r, e.Selector())\n"
        "r = e.estimate(c, proc_path=%r, use_zero_pages=True, size=4096, max_entries=16)\n"
        "print(json.dumps(r))\n"
    ) % (str(lib), str(proc), str(proc))
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    assert result["saving_pages"] == 2 + 1 + 2 and result["zero_pages"] == 2 and result["shared_zero_pages"] == 1
    assert {g["kind"] for g in result["groups"]} == {"container", "unit"}


def _stream(seed, runs, length=6000):
    """Pages (bytes): contents repeated across groups, new ones, and (runs) runs of one content."""
    rng = random.Random(seed)
    pool = [b"%06d" % rng.getrandbits(20) * 8 for _index in range(700)]
    pages = []
    while len(pages) < length:
        roll = rng.random()
        if roll < runs:
            pages.extend([rng.choice(pool)] * rng.randint(2, 80))      # a run of one content
        elif roll < 0.5:
            pages.append(rng.choice(pool))                              # seen before, probably
        else:
            pages.append(b"%016x" % rng.getrandbits(64) * 3)            # new
    return pages[:length]


def _state(table):
    return (table.counts, table.owner, table.split, table.weight, table.heavy_crcs, table.size, table.sample,
            table.heavy, table.shrinks, table.last, table.run)


@pytest.mark.parametrize("runs", [0.0, 0.02])
@pytest.mark.parametrize("seed", range(4))
def test_batched_pages_count_as_page_by_page(seed, runs):
    """ContentTable.pages() over runs of pages leaves the table exactly as page() one page at a time.

    Small tables make the slice narrow (and contents turn heavy) in the middle of a batch, and runs of
    one content cross the boundaries of the batches, as on a real scan. Without runs, most batches take
    pages()' own path; with them, most take page() for the pages of a run.
    """
    rng = random.Random(seed)
    pages = _stream(seed, runs)
    one = _estimate.ContentTable(max_entries=256, heavy=8)
    many = _estimate.ContentTable(max_entries=256, heavy=8)
    index = 0
    while index < len(pages):
        batch = pages[index:index + rng.choice([1, 3, 17, 64, 256])]
        group = rng.choice(["a", "b", "c"])
        crcs = [zlib.crc32(page) & 0xFFFFFFFF for page in batch]
        for crc, page in zip(crcs, batch):
            one.page(crc, page, group)
        heads = [zlib.crc32(page[:len(page) // 2]) & 0xFFFFFFFF for page in batch]
        many.pages(crcs, heads, batch, group)
        assert _state(many) == _state(one), "after page %d" % index
        index += len(batch)
    assert one.shrinks >= 2, "the stream must make the table shrink"
    assert one.weight or not runs, "runs of one content must make some contents heavy"


def test_the_key_is_the_crc_and_the_crc_of_the_first_half():
    page = content("X")
    crc = zlib.crc32(page) & 0xFFFFFFFF
    head = zlib.crc32(page[:PAGE // 2])
    assert zlib.crc32(page[PAGE // 2:], head) & 0xFFFFFFFF == crc       # what the scan computes it from
    assert _estimate._key(crc, page) == crc | (head & 0xFFFFFFFF) << 32
    assert _estimate._key(crc, memoryview(page)) == _estimate._key(crc, page)


def test_the_read_buffer_starts_on_a_page_boundary():
    import ctypes
    raw, start = _estimate._page_aligned(8 * PAGE)
    assert len(raw) - start >= 8 * PAGE
    assert (ctypes.addressof(ctypes.c_char.from_buffer(raw)) + start) % 4096 == 0


def test_runs_with_zero_pages_and_runs_longer_than_one_read(proc, monkeypatch):
    """Zero pages inside a run, a run of one content split over several reads, and contents across runs."""
    monkeypatch.setattr(_estimate, "RUN_PAGES", 4)
    tags = ["A", None, "B", "A", "R", "R", "R", "R", "R", "R", None, None, "C", "B"]
    plant(proc, 100, anon(*tags))
    plant(proc, 200, anon("C", "A", None, "D"))
    result, _denied = run(proc, use_zero_pages=False)
    assert result["scanned_pages"] == 18 and result["zero_pages"] == 4
    # A x3, B x2, R x6, C x2 save 2 + 1 + 5 + 1; the 4 zero pages merge into one KSM page: 3
    assert result["saving_pages"] == 2 + 1 + 5 + 1 + 3
    assert result["duplicate_pages"] == 3 + 2 + 6 + 2
