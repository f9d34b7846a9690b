# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Estimate what KSM would save, before it is turned on, by reading candidate processes' memory.

Private to the collection (leading underscore). Runs on the managed host: Python 2.7 / 3.6 clean.
Only reads: /proc/PID/{maps,pagemap,mem,status,cgroup,cmdline,ksm_stat}. It never writes, never
stops or traces a process (reading /proc/PID/mem does not pause the target), and every read
tolerates a process that exits or remaps memory while it is scanned.

How it counts (one pass, bounded memory):
- For each candidate, the private mappings of /proc/PID/smaps that hold anonymous memory are
  walked through /proc/PID/pagemap;
  pages that are present and anonymous (bit 63 set, bit 61 clear) are read from /proc/PID/mem,
  in runs of at most RUN_PAGES pages, into one reused, page-aligned buffer.
- All-zero pages are counted apart, exactly. A zero page that is not exclusively mapped (bit 56
  clear) may be the kernel's shared zero page (never written, or already merged by use_zero_pages),
  which costs no memory and is skipped; /proc/kpageflags (KPF_ZERO_PAGE) tells it from a KSM page
  that holds zeros (merged with use_zero_pages off), which is counted.
- Every other page gets a CRC-32. Contents are sampled by that hash: a page is kept when its CRC
  falls in the 1/k slice (low log2(k) bits zero), so every copy of a content is kept or dropped
  together and the estimate stays unbiased. Kept pages are counted per 64-bit key (the CRC-32 and
  the CRC-32 of the page's first half, both from one pass: the page's CRC-32 continues the first
  half's) in a table of at most ``max_entries`` contents. When the table is full, k doubles and
  the contents outside the new slice are dropped; contents already seen ``heavy`` times are kept
  and counted exactly from then on (weighted by the k at which they were kept), so one content
  repeated millions of times does not make the estimate swing.
- A content with n copies saves n - ceil(n / max_page_sharing) pages (KSM shares one KSM page
  among at most max_page_sharing mappings). Zero pages save all of them with use_zero_pages,
  else the same as any other content.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import itertools
import operator
import os
import re
import struct
import sys
import time
import zlib

from ansible_collections.samepage.ksm.plugins.module_utils._groups import NameResolver, parse_cgroup, classify

PM_PRESENT = 1 << 63
PM_FILE = 1 << 61
PM_EXCLUSIVE = 1 << 56
PFN_MASK = (1 << 55) - 1
KPF_ZERO_PAGE = 1 << 24
CHUNK_PAGES = 16384        # pagemap entries read at once (128 KiB of pagemap, 64 MiB of address space)
RUN_PAGES = 256            # pages read from /proc/PID/mem at once (1 MiB)
DEFAULT_MAX_ENTRIES = 65536
DEFAULT_HEAVY = 32
MIB = 1024 * 1024
GIB = 1024 * MIB
PY2 = sys.version_info[0] == 2
_imap = getattr(itertools, 'imap', map)     # lazy on Python 2 too

# Special mappings KSM never merges (VM_PFNMAP / VM_IO / hugetlb) or that hold no user memory.
_SPECIAL = re.compile(r'\A(?:\[(?:vvar|vvar_vclock|vdso|vsyscall|uprobes)\]|/anon_hugepage|/dev/hugepages/|/SYSV)')

# The top byte of a pagemap entry (bits 56-63) decides a page's class:
# 'e' present anonymous exclusive, 's' present anonymous not exclusive, '.' anything else.
_CLASS_TABLE = bytearray(256)
for _byte in range(256):
    if _byte & 0x80 and not _byte & 0x20:
        _CLASS_TABLE[_byte] = ord('e') if _byte & 0x01 else ord('s')
    else:
        _CLASS_TABLE[_byte] = ord('.')
_CLASS_TABLE = bytes(_CLASS_TABLE)
_RUNS = re.compile(b'[es]+')


def _cpu_seconds():
    times = os.times()
    return times[0] + times[1]


def _clock():
    return time.monotonic() if hasattr(time, 'monotonic') else time.time()


def _key(crc, view):
    """The table's key of a page with CRC-32 crc: crc, and the CRC-32 of the page's first half above it.

    The scan gets both from one pass over the page (the CRC-32 of the first half, continued over the
    second half, is the page's CRC-32), so telling apart contents whose CRC-32s collide costs nothing more.
    """
    return crc | (zlib.crc32(view[:len(view) // 2]) & 0xffffffff) << 32


if PY2:
    _BUFFER = buffer  # noqa: F821  pylint: disable=undefined-variable

    def _views(buf, start, length, step, count):
        """Read-only views of length bytes every step bytes of buf (a bytearray) from start; no copies, they follow buf."""
        return [_BUFFER(buf, start + index * step, length) for index in range(count)]

    def _crcs(heads, tails):
        """(CRC-32s of the pages, CRC-32s of their first halves), unsigned, from views of their halves."""
        firsts = list(map(zlib.crc32, heads))
        return [crc & 0xffffffff for crc in map(zlib.crc32, tails, firsts)], [crc & 0xffffffff for crc in firsts]
else:
    def _views(buf, start, length, step, count):
        """Read-only views of length bytes every step bytes of buf (a bytearray) from start; no copies, they follow buf."""
        view = memoryview(buf)
        return [view[start + index * step:start + index * step + length] for index in range(count)]

    def _crcs(heads, tails):
        """(CRC-32s of the pages, CRC-32s of their first halves), unsigned, from views of their halves."""
        firsts = list(map(zlib.crc32, heads))
        return list(map(zlib.crc32, tails, firsts)), firsts


def _page_aligned(length, align=4096):
    """(bytearray, offset): a buffer holding length bytes from offset, which is on an align boundary.

    The kernel copies /proc/PID/mem out of a page-aligned buffer; a destination 16 bytes past a page
    boundary (where malloc puts a large bytearray) makes that copy 2-3 times slower on x86 (4K aliasing).
    """
    raw = bytearray(length + align)
    try:
        import ctypes
        address = ctypes.addressof(ctypes.c_char.from_buffer(raw))
    except (ImportError, TypeError, ValueError, AttributeError, OSError):
        return raw, 0
    return raw, -address % align


def _read_text(path):
    with open(path, 'rb') as handle:
        return handle.read().decode('utf-8', 'replace')


def page_size():
    try:
        return os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        return 4096


_AREA_HEADER = re.compile(r'\A([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+ *(.*)\Z')


def parse_maps(lines, smaps=False):
    """Private mappings KSM could merge, as (start, end), from the lines of /proc/PID/maps or smaps.

    A generator, so that a process with tens of thousands of mappings costs no memory here. With
    smaps, mappings whose ``Anonymous:`` size is 0 are left out: a process that reserves terabytes
    of address space (a database, a JVM) costs no pagemap walk over them.
    """
    current = None
    for line in lines:
        if isinstance(line, bytes):
            line = line.decode('utf-8', 'replace')
        line = line.rstrip('\n')
        header = _AREA_HEADER.match(line)
        if header:
            current = None
            start, end, perms, path = header.groups()
            if len(perms) < 4 or perms[3] != 'p' or _SPECIAL.match(path):
                continue
            current = (int(start, 16), int(end, 16))
            if not smaps:
                yield current
                current = None
        elif current is not None and line.startswith('Anonymous:'):
            fields = line.split()
            if len(fields) > 1 and fields[1] != '0':
                yield current
            current = None


def _ceil_div(a, b):
    return -(-a // b)


def saving_of(copies, max_page_sharing):
    """Pages KSM saves on one content with ``copies`` mappings."""
    if copies < 2:
        return 0
    return copies - _ceil_div(copies, max_page_sharing)


class ContentTable:
    """Sampled page contents: at most max_entries contents counted, in a 1/k slice of CRC-32 space."""

    def __init__(self, max_entries=DEFAULT_MAX_ENTRIES, sample=1, heavy=DEFAULT_HEAVY):
        self.max_entries = max_entries
        self.sample = sample
        self.mask = sample - 1
        self.heavy = heavy
        self.counts = {}
        self.owner = {}
        self.split = {}
        self.weight = {}
        self.heavy_crcs = set()
        self.size = 0
        self.shrinks = 0
        self.last = None
        self.run = 0

    def wants(self, crc):
        return not crc & self.mask or crc in self.heavy_crcs

    def page(self, crc, view, group):
        """Count one non-zero page with CRC-32 crc (view: its bytes, hashed again only when kept)."""
        if crc == self.last:
            self.run += 1
            if self.run == self.heavy:
                # A content repeated in a run (a buffer filled with one pattern) is counted exactly from
                # here, with the run's earlier copies, whatever its hash: one such content must not
                # make the estimate swing by the sampling factor.
                key = _key(crc, view)
                if key in self.counts:
                    self.weight[key] = 1
                    self.heavy_crcs.add(crc)
                    self.add(key, group)
                else:
                    self._promote(key, group, self.run)
                return
        else:
            self.last = crc
            self.run = 1
        if not crc & self.mask or crc in self.heavy_crcs:
            self.add(_key(crc, view), group)

    def pages(self, crcs, heads, views, group):
        """page(crc, view, group) for each page of a run, in order, with the same counts, at less cost per page.

        crcs: the pages' CRC-32s (unsigned); heads: the CRC-32s of their first halves (the key's other half,
        as _key() makes it); views: their bytes. Unless a page has the CRC of the page
        before it (a run of one content) or some contents are counted exactly (heavy), the pages in the
        slice are picked out by iterators in C and only they cost Python work; after a shrink the rest of
        the run is picked again with the new slice.
        """
        count = len(crcs)
        if not count:
            return
        start = 0
        if crcs[0] != self.last and not any(_imap(operator.eq, crcs, itertools.islice(crcs, 1, None))):
            counts = self.counts
            owner = self.owner
            split = self.split
            while start < count and not self.heavy_crcs:
                mask = self.mask
                chosen = range(start, count)
                if mask:
                    chosen = itertools.compress(chosen, _imap(operator.not_, _imap(
                        operator.and_, itertools.islice(crcs, start, None), itertools.repeat(mask))))
                start = count
                for index in chosen:
                    key = crcs[index] | heads[index] << 32
                    copies = counts.get(key)
                    if copies is None:
                        counts[key] = 1
                        owner[key] = group
                        self.size += 1
                        if self.size > self.max_entries:
                            self._shrink()
                            start = index + 1
                            break
                    elif key not in split and owner[key] == group:
                        counts[key] = copies + 1
                    else:
                        self.add(key, group)
            if start:
                self.last = crcs[start - 1]
                self.run = 1
        if start < count:
            self._pages_each(crcs, heads, views, group, start)

    def _pages_each(self, crcs, heads, views, group, start):
        counts = self.counts
        owner = self.owner
        split = self.split
        mask = self.mask
        heavy_crcs = self.heavy_crcs
        for index in range(start, len(crcs)):
            crc = crcs[index]
            if crc == self.last:
                self.page(crc, views[index], group)
                mask = self.mask
                heavy_crcs = self.heavy_crcs
                continue
            self.last = crc
            self.run = 1
            if crc & mask and crc not in heavy_crcs:
                continue
            key = crc | heads[index] << 32
            copies = counts.get(key)
            if copies is None:
                counts[key] = 1
                owner[key] = group
                self.size += 1
                if self.size > self.max_entries:
                    self._shrink()
                    mask = self.mask
                    heavy_crcs = self.heavy_crcs
            elif key not in split and owner[key] == group:
                counts[key] = copies + 1
            else:
                self.add(key, group)

    def end_run(self):
        self.last = None
        self.run = 0

    def _promote(self, key, group, copies):
        self.counts[key] = copies
        self.owner[key] = group
        self.weight[key] = 1
        self.heavy_crcs.add(key & 0xffffffff)
        self.size += 1
        if self.size > self.max_entries:
            self._shrink()

    def add(self, key, group):
        counts = self.counts
        copies = counts.get(key)
        if copies is None:
            counts[key] = 1
            self.owner[key] = group
            self.size += 1
            if self.size > self.max_entries:
                self._shrink()
            return
        counts[key] = copies + 1
        split = self.split.get(key)
        if split is not None:
            if group not in split:
                self.size += 1
            split[group] = split.get(group, 0) + 1
        elif self.owner[key] != group:
            self.split[key] = {self.owner[key]: copies, group: 1}
            self.size += 2

    def _shrink(self):
        counts = self.counts
        weight = self.weight
        while self.size > self.max_entries:
            self.shrinks += 1
            heavy, sample = self.heavy, self.sample
            for key in [k for k, copies in counts.items() if copies >= heavy and k not in weight]:
                weight[key] = sample
            while len(weight) > self.max_entries // 2:
                self.heavy *= 2
                heavy = self.heavy
                for key in [k for k in weight if counts[k] < heavy]:
                    del weight[key]
            self.heavy_crcs = set(key & 0xffffffff for key in weight)
            self.sample *= 2
            self.mask = mask = self.sample - 1
            for key in [k for k in counts if k & mask and k not in weight]:
                del counts[key]
                del self.owner[key]
                self.split.pop(key, None)
            # an entry per content, and one per group of a content split between groups
            self.size = len(counts) + sum(len(shares) for shares in self.split.values())

    def totals(self, max_page_sharing):
        """(saving, duplicated pages, variance of the saving, per-group {group: [saving, duplicated]}) - estimates.

        The variance is the Horvitz-Thompson estimate for contents kept with probability 1/weight.
        """
        saving = 0.0
        variance = 0.0
        duplicated = 0.0
        per_group = {}
        for key, copies in self.counts.items():
            if copies < 2:
                continue
            weight = self.weight.get(key, self.sample)
            one = saving_of(copies, max_page_sharing)
            save = one * weight
            saving += save
            variance += weight * (weight - 1) * one * one
            duplicated += copies * weight
            split = self.split.get(key)
            shares = split.items() if split else ((self.owner[key], copies),)
            for group, count in shares:
                slot = per_group.setdefault(group, [0.0, 0.0])
                slot[0] += save * count / copies
                slot[1] += count * weight
        return saving, duplicated, variance, per_group


class Scan:
    """Counters of one estimate run."""

    def __init__(self, table, deadline, kpageflags=None):
        self.table = table
        self.deadline = deadline
        self.kpageflags = kpageflags
        self.frame_is_zero_page = {}
        self.scanned_pages = 0
        self.zero_pages = 0
        self.zero_mapped = 0
        self.unreadable_pages = 0
        self.complete = True
        self.group_pages = {}
        self.group_zero = {}
        self.buffer = None
        self.start = 0
        self.page_size = None
        self.page_views = None
        self.head_views = None
        self.tail_views = None
        self.window = None
        self.zero_crc = None

    def reuse(self, size):
        """(buffer, start): the one read buffer (RUN_PAGES pages from start) that every run is read into.

        Built once per page size with a view of each page (page_views), of each page's halves (head_views,
        tail_views) and a writable view of the whole (window), so that a run costs no allocation and no
        slicing per page.
        """
        if self.buffer is None or self.page_size != size:
            self.buffer, self.start = _page_aligned(RUN_PAGES * size)
            self.page_size = size
            half = size // 2
            self.page_views = _views(self.buffer, self.start, size, size, RUN_PAGES)
            self.head_views = _views(self.buffer, self.start, half, size, RUN_PAGES)
            self.tail_views = _views(self.buffer, self.start + half, size - half, size, RUN_PAGES)
            self.window = memoryview(self.buffer)[self.start:self.start + RUN_PAGES * size]
            self.zero_crc = zlib.crc32(b'\0' * size) & 0xffffffff
        return self.buffer, self.start

    def written_zero(self, entries, index):
        """Whether a zero-filled, not exclusively mapped page is real memory (a KSM or forked page).

        Such a page may also be the kernel's shared zero page, which costs nothing: /proc/kpageflags
        (KPF_ZERO_PAGE) tells them apart. Without it (no root, or PFNs hidden) it counts as the
        shared zero page.
        """
        pfn = struct.unpack_from('<Q', entries, index * 8)[0] & PFN_MASK
        if not pfn or self.kpageflags is None:
            return False
        known = self.frame_is_zero_page.get(pfn)
        if known is None:
            try:
                flags = struct.unpack('<Q', _read_at(self.kpageflags, pfn * 8, 8))[0]
            except (IOError, OSError, struct.error, ValueError, OverflowError):
                return False
            known = bool(flags & KPF_ZERO_PAGE)
            if len(self.frame_is_zero_page) < 65536:
                self.frame_is_zero_page[pfn] = known
        return not known


def _read_at(handle, offset, size):
    handle.seek(offset)
    return handle.read(size)


def _scan_run(scan, mem, address, classes, entries, first, size, group, zero):
    """Read one run of present anonymous pages and count them; returns pages read."""
    count = len(classes)
    buf, start = scan.reuse(size)
    try:
        mem.seek(address)
        got = mem.readinto(scan.window[:count * size])
    except (IOError, OSError, OverflowError, ValueError):
        got = 0
    if not got or got < count * size:
        # Part of the run went away (unmapped, or unreadable): retry page by page.
        pages = []
        for index in range(count):
            try:
                page = _read_at(mem, address + index * size, size)
            except (IOError, OSError, OverflowError, ValueError):
                page = b''
            if len(page) == size:
                pages.append((index, page))
            else:
                scan.unreadable_pages += 1
        for index, page in pages:
            exclusive = classes[index:index + 1] == b'e'
            _count_page(scan, page, exclusive or scan.written_zero(entries, first + index), group, zero)
        return len(pages)
    views = scan.page_views[:count]
    crcs, heads = _crcs(scan.head_views[:count], scan.tail_views[:count])
    zeros = 0
    shared_zeros = 0
    zero_crc = scan.zero_crc
    if zero_crc in crcs:
        kept = []
        for index, crc in enumerate(crcs):
            offset = start + index * size
            if crc == zero_crc and buf.startswith(zero, offset, offset + size):
                if classes[index:index + 1] == b'e' or scan.written_zero(entries, first + index):
                    zeros += 1
                else:
                    shared_zeros += 1
            else:
                kept.append(index)
        crcs = [crcs[index] for index in kept]
        heads = [heads[index] for index in kept]
        views = [views[index] for index in kept]
    scan.table.pages(crcs, heads, views, group)
    nonzero = len(crcs)
    scan.zero_pages += zeros
    scan.zero_mapped += shared_zeros
    scan.group_zero[group] = scan.group_zero.get(group, 0) + zeros
    scan.group_pages[group] = scan.group_pages.get(group, 0) + nonzero + zeros
    scan.scanned_pages += nonzero + zeros
    return count


def _count_page(scan, page, real, group, zero):
    """One page read on its own: real tells whether a zero-filled page is memory of its own."""
    if page == zero:
        if real:
            scan.zero_pages += 1
            scan.group_zero[group] = scan.group_zero.get(group, 0) + 1
        else:
            scan.zero_mapped += 1
            return
    else:
        scan.table.page(zlib.crc32(page) & 0xffffffff, page, group)
    scan.group_pages[group] = scan.group_pages.get(group, 0) + 1
    scan.scanned_pages += 1


def scan_process(scan, proc_path, pid, group, size):
    """Count one process's present anonymous pages.

    Raises IOError/OSError when the process is gone or unreadable before anything was read; a
    process that ends during the scan keeps what was counted.
    """
    base = os.path.join(proc_path, str(pid))
    smaps = os.path.join(base, 'smaps')
    if not os.path.exists(smaps):
        smaps = None        # kernels without CONFIG_PROC_PAGE_MONITOR: maps only
    listing = open(smaps or os.path.join(base, 'maps'), 'rb')
    try:
        _scan_areas(scan, base, parse_maps(_lines(listing), smaps=smaps is not None), group, size)
    finally:
        listing.close()
    return True


def _lines(handle):
    """The lines of a /proc listing until it ends or its process does."""
    while True:
        try:
            line = handle.readline()
        except (IOError, OSError):
            return
        if not line:
            return
        yield line


def _scan_areas(scan, base, areas, group, size):
    zero = b'\0' * size
    empty_chunk = b'\0' * (8 * CHUNK_PAGES)
    scan.table.end_run()
    with open(os.path.join(base, 'pagemap'), 'rb', 0) as pagemap:
        with open(os.path.join(base, 'mem'), 'rb', 0) as mem:
            for start, end in areas:
                address = start
                while address < end:
                    if _clock() > scan.deadline:
                        scan.complete = False
                        return
                    pages = min(CHUNK_PAGES, (end - address) // size)
                    try:
                        entries = _read_at(pagemap, (address // size) * 8, pages * 8)
                    except (IOError, OSError, OverflowError, ValueError):
                        break   # the mapping went away: go on with the next one
                    if not entries:
                        break
                    if entries != empty_chunk[:len(entries)]:
                        classes = entries[7::8].translate(_CLASS_TABLE)
                        for match in _RUNS.finditer(classes):
                            first, last = match.span()
                            while first < last:
                                stop = min(last, first + RUN_PAGES)
                                _scan_run(scan, mem, address + first * size, classes[first:stop], entries, first,
                                          size, group, zero)
                                first = stop
                    address += pages * size


def parse_status(text):
    """RssAnon in bytes and whether the task is a kernel thread (no VmSize line), from /proc/PID/status."""
    anon = None
    user = False
    for line in text.splitlines():
        if line.startswith('RssAnon:'):
            anon = int(line.split()[1]) * 1024
        elif line.startswith('VmSize:'):
            user = True
    return (anon or 0), user


def parse_ksm_stat(text):
    values = {}
    for line in text.splitlines():
        parts = line.replace(':', ' ').split()
        if len(parts) == 2:
            try:
                values[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return values


class Selector:
    """Which processes are candidates: any of the given selectors (all processes when none), above a size."""

    def __init__(self, pids=None, units=None, cgroups=None, containers=None, command=None, min_bytes=0,
                 exclude=None):
        self.pids = set(pids or [])
        self.units = set(units or [])
        self.cgroups = [c.rstrip('/') or '/' for c in (cgroups or [])]
        self.containers = set(containers or [])
        self.command = re.compile(command) if command else None
        self.min_bytes = min_bytes
        self.exclude = set(exclude or [])
        self.any = bool(self.pids or self.units or self.cgroups or self.containers or self.command)

    def _unit_match(self, paths):
        for path in paths:
            for component in path.split('/'):
                if component in self.units or component.rsplit('.', 1)[0] in self.units \
                        and component.endswith(('.service', '.scope', '.slice')):
                    return True
        return False

    def _cgroup_match(self, paths):
        for path in paths:
            for wanted in self.cgroups:
                if wanted == '/' or path == wanted or path.startswith(wanted + '/'):
                    return True
        return False

    def matches(self, pid, paths, group, name, cmdline):
        if pid in self.exclude:
            return False
        if not self.any:
            return True
        if pid in self.pids:
            return True
        if self.units and self._unit_match(paths):
            return True
        if self.cgroups and self._cgroup_match(paths):
            return True
        if self.containers and group['kind'] in ('container', 'lxc', 'openvz'):
            ident = group['id']
            for wanted in self.containers:
                if wanted == ident or wanted == name or len(wanted) >= 12 and ident.startswith(wanted):
                    return True
        if self.command is not None and self.command.search(cmdline):
            return True
        return False


def _pids(proc_path):
    try:
        return sorted(int(name) for name in os.listdir(proc_path) if name.isdigit())
    except (IOError, OSError):
        return []


def find_candidates(proc_path, selector, group_by='group', root='/'):
    """(list of candidate dicts, processes that were unreadable for lack of permission)."""
    names = NameResolver(root)
    found = []
    denied = 0
    for pid in _pids(proc_path):
        base = os.path.join(proc_path, str(pid))
        try:
            anon, user = parse_status(_read_text(os.path.join(base, 'status')))
            if not user or anon < max(selector.min_bytes, 1):
                continue
            entries = parse_cgroup(_read_text(os.path.join(base, 'cgroup')))
            raw = _read_text(os.path.join(base, 'cmdline'))
            comm = _read_text(os.path.join(base, 'comm')).strip()
        except (IOError, OSError) as exc:
            if getattr(exc, 'errno', None) in (errno.EACCES, errno.EPERM):
                denied += 1
            continue
        except ValueError:
            continue
        cmdline = raw.replace('\0', ' ').strip() or comm
        group = classify(entries)
        group['name'] = names.name(group)
        if not selector.matches(pid, [path for _c, path in entries], group, group['name'], cmdline):
            continue
        if group_by == 'process':
            group = {'kind': 'process', 'id': str(pid), 'name': comm, 'runtime': None}
        found.append({'pid': pid, 'comm': comm, 'anon_bytes': anon, 'group': group})
    return found, denied


def read_mem_total(path='/proc/meminfo'):
    try:
        for line in _read_text(path).splitlines():
            if line.startswith('MemTotal:'):
                return int(line.split()[1]) * 1024
    except (IOError, OSError, ValueError, IndexError):
        pass
    return None


def _mib(value):
    return round(value / MIB, 2)


def estimate(candidates, proc_path='/proc', use_zero_pages=False, max_page_sharing=256, sample=1,
             max_entries=DEFAULT_MAX_ENTRIES, time_budget=300, top=10, size=None, heavy=DEFAULT_HEAVY,
             mem_total=None):
    """Scan the candidates and return the estimate as a dict (see the ksm_estimate module's RETURN)."""
    size = size or page_size()
    started, cpu_started = _clock(), _cpu_seconds()
    table = ContentTable(max_entries=max_entries, sample=sample, heavy=heavy)
    try:
        kpageflags = open(os.path.join(proc_path, 'kpageflags'), 'rb', 0)
    except (IOError, OSError):
        kpageflags = None
    scan = Scan(table, started + time_budget, kpageflags)
    try:
        return _estimate(scan, candidates, proc_path, use_zero_pages, max_page_sharing, sample, max_entries, top,
                         size, mem_total, started, cpu_started)
    finally:
        if kpageflags is not None:
            kpageflags.close()


def _estimate(scan, candidates, proc_path, use_zero_pages, max_page_sharing, sample, max_entries, top, size,
              mem_total, started, cpu_started):
    table = scan.table
    groups = {}
    merged = {'merging_pages': 0, 'zero_pages': 0, 'profit_bytes': None}
    vanished = unreadable = scanned = 0
    for cand in candidates:
        key = (cand['group']['kind'], cand['group']['id'])
        info = groups.setdefault(key, dict(cand['group'], processes=0, merging_pages=0))
        if _clock() > scan.deadline:
            scan.complete = False
            break
        try:
            scan_process(scan, proc_path, cand['pid'], key, size)
        except (IOError, OSError) as exc:
            if getattr(exc, 'errno', None) in (errno.EACCES, errno.EPERM):
                unreadable += 1
            else:
                vanished += 1
            continue
        scanned += 1
        info['processes'] += 1
        try:
            stat = parse_ksm_stat(_read_text(os.path.join(proc_path, str(cand['pid']), 'ksm_stat')))
        except (IOError, OSError):
            stat = {}
        merged['merging_pages'] += stat.get('ksm_merging_pages', 0)
        merged['zero_pages'] += stat.get('ksm_zero_pages', 0)
        info['merging_pages'] += stat.get('ksm_merging_pages', 0)
        if 'ksm_process_profit' in stat:
            merged['profit_bytes'] = (merged['profit_bytes'] or 0) + stat['ksm_process_profit']

    saving, duplicated, variance, per_group = table.totals(max_page_sharing)
    zeros = scan.zero_pages
    zero_saving = zeros if use_zero_pages else saving_of(zeros, max_page_sharing)
    total_saving = saving + zero_saving
    elapsed = _clock() - started
    cpu = _cpu_seconds() - cpu_started
    scanned_bytes = scan.scanned_pages * size

    group_list = []
    for key, info in groups.items():
        if not info['processes']:
            continue
        group_zero = scan.group_zero.get(key, 0)
        share = zero_saving * group_zero / zeros if zeros else 0
        save, dup = per_group.get(key, (0.0, 0.0))
        pages = int(round(save + share))
        group_list.append(dict(info, scanned_pages=scan.group_pages.get(key, 0), zero_pages=group_zero,
                               duplicate_pages=int(round(dup)), saving_pages=pages, saving_bytes=pages * size,
                               saving_mib=_mib(pages * size)))
    group_list.sort(key=lambda g: (-g['saving_pages'], -g['scanned_pages'], g['kind'], g['id']))

    saving_pages = int(round(total_saving))
    result = {
        'page_size': size,
        'mem_total_bytes': mem_total,
        'use_zero_pages': bool(use_zero_pages),
        'max_page_sharing': max_page_sharing,
        'candidates': len(candidates),
        'scanned_processes': scanned,
        'vanished_processes': vanished,
        'unreadable_processes': unreadable,
        'unreadable_pages': scan.unreadable_pages,
        'scanned_pages': scan.scanned_pages,
        'scanned_bytes': scanned_bytes,
        'scanned_mib': _mib(scanned_bytes),
        'zero_pages': zeros,
        'shared_zero_pages': scan.zero_mapped,
        'duplicate_pages': int(round(duplicated)),
        'saving_pages': saving_pages,
        'saving_bytes': saving_pages * size,
        'saving_mib': _mib(saving_pages * size),
        'saving_stderr_pages': int(round(variance ** 0.5)),
        'saving_stderr_mib': _mib(variance ** 0.5 * size),
        'saving_percent_of_ram': round(100.0 * saving_pages * size / mem_total, 2) if mem_total else None,
        'merged': merged,
        'sample': {'initial': sample, 'final': table.sample, 'entries': table.size, 'max_entries': max_entries,
                   'heavy_contents': len(table.weight)},
        'complete': scan.complete,
        'elapsed_seconds': round(elapsed, 3),
        'cpu_seconds': round(cpu, 3),
        'cpu_seconds_per_gib': round(cpu * GIB / scanned_bytes, 3) if scanned_bytes else None,
        'groups': group_list[:top] if top else [],
        'group_count': len(group_list),
    }
    return result
