"""Webdataset tar shards without Beam: samples, their members, and deterministic tar bytes.

No Beam import: the caption reader (`webdataset.read_webdataset`), the resharder
DoFns and the tests call these same functions.

A webdataset shard is a tar file whose regular members are grouped into samples the way
`webdataset.tariterators` (1.0) groups them:
- a member name splits into `__key__` and extension at the first dot of its last path
  component (`a/b/0001.seg.png` -> key `a/b/0001`, extension `seg.png`); names without a
  dot there are not sample members;
- extensions are compared in lower case; directories, links and other non-regular
  members, `__*__` names at the top level and names starting with `__...__/` are skipped;
- consecutive members with the same key form one sample.
One deliberate difference: where webdataset raises on an extension that repeats inside a
sample, this reader starts a new sample with the same key (what DataComp's resharder
does), so one odd tar does not stop a run; the key is then reported as a duplicate.

Members are read lazily: `iter_tar_samples` only reads the bytes of members the caller
asks for (captions when curating, every member of kept samples when resharding), so
images are never decoded and, when not needed, never held in memory.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from typing import IO, Callable, Iterable, Iterator, Optional

WEBDATASET = "webdataset"
# The default --text_field of webdataset inputs: a name starting with "." names a member
# by its extension; any other name is a field of the sample's .json member.
TXT_MEMBER = ".txt"

_MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_META_NAME = re.compile(r"__[^/]*__($|/)")

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240: tarfile pads archives to a multiple of this


def split_member_name(name: str) -> tuple[Optional[str], Optional[str]]:
    """(key, extension) of a member name, as webdataset's base_plus_ext; (None, None) if none."""
    match = _MEMBER_NAME.match(name)
    if not match:
        return None, None
    return match.group(1), match.group(2)


def is_sample_member(info: tarfile.TarInfo) -> bool:
    """Whether webdataset would make this tar member part of a sample."""
    name = info.name
    if not info.isreg() or not name:
        return False
    if "/" not in name and name.startswith("__") and name.endswith("__"):
        return False
    return not _META_NAME.match(name)


@dataclass
class Member:
    name: str  # the member's full name in the tar, as stored
    ext: str  # lower-case extension: "jpg", "txt", "seg.png"
    size: int
    data: Optional[bytes] = None  # None when the caller did not ask for the bytes


@dataclass
class TarSample:
    index: int  # position of the sample in its tar, from 0
    key: str  # webdataset's __key__
    members: list[Member] = field(default_factory=list)

    def member(self, ext: str) -> Optional[Member]:
        for member in self.members:
            if member.ext == ext:
                return member
        return None

    def extensions(self) -> list[str]:
        return [member.ext for member in self.members]


def open_tar_stream(fileobj: IO[bytes]) -> tarfile.TarFile:
    """A tar read as a stream (no seeking; gzip/bz2/xz detected from the bytes)."""
    return tarfile.open(fileobj=fileobj, mode="r|*", encoding="utf-8", errors="surrogateescape")


def iter_tar_samples(fileobj: IO[bytes], read_data: Callable[[int, str], bool]) -> Iterator[TarSample]:
    """The samples of one tar, in order.

    `read_data(sample_index, extension)` says whether to read a member's bytes; the
    others are skipped unread. A sample is yielded once the next sample's first member
    (or the end of the tar) is seen, as webdataset does; a read error raises after the
    samples completed before it.
    """
    tar = open_tar_stream(fileobj)
    current: Optional[TarSample] = None
    index = -1
    for info in tar:
        if not is_sample_member(info):
            continue
        key, suffix = split_member_name(info.name)
        if key is None:
            continue
        ext = suffix.lower()
        if current is None or key != current.key or current.member(ext) is not None:
            if current is not None:
                yield current
            index += 1
            current = TarSample(index, key)
        data = None
        if read_data(index, ext):
            handle = tar.extractfile(info)
            data = handle.read() if handle is not None else b""
        current.members.append(Member(info.name, ext, info.size, data))
        tar.members = []  # a stream reader would otherwise keep every header
    if current is not None:
        yield current


def tar_member_bytes(name: str, data: bytes) -> bytes:
    """One regular member, header and padded data, with fixed metadata (mtime 0, root, 0644).

    The same name and data give the same bytes on any machine: what makes resharded tars
    identical whatever the runner. Long or non-ASCII names get a PAX header.
    """
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    header = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")
    padding = (-len(data)) % BLOCK
    return header + data + b"\0" * padding


def tar_sample_bytes(sample: TarSample) -> bytes:
    """Every member of a sample (read with its data), in its original order and names."""
    parts = []
    for member in sample.members:
        if member.data is None:
            raise ValueError(f"member {member.name} of sample {sample.key} was not read")
        parts.append(tar_member_bytes(member.name, member.data))
    return b"".join(parts)


def tar_end(length: int) -> bytes:
    """The end of an archive of `length` bytes of members: two zero blocks, padded as tarfile pads."""
    total = length + 2 * BLOCK
    return b"\0" * (2 * BLOCK + (-total) % RECORD)


def write_tar(handle, samples: Iterable[bytes]) -> int:
    """Write member bytes then the archive end to `handle`; return the bytes written."""
    length = 0
    for chunk in samples:
        handle.write(chunk)
        length += len(chunk)
    end = tar_end(length)
    handle.write(end)
    return length + len(end)


# --- brace patterns ------------------------------------------------------------------

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$|^([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?$")


def _matching_brace(pattern: str, start: int) -> int:
    """Index of the `}` closing the `{` at `start`, or -1."""
    depth = 0
    for i in range(start, len(pattern)):
        if pattern[i] == "{":
            depth += 1
        elif pattern[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _split_top_level(body: str) -> list[str]:
    parts, depth, last = [], 0, 0
    for i, char in enumerate(body):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(body[last:i])
            last = i + 1
    parts.append(body[last:])
    return parts


def _range_items(body: str) -> Optional[list[str]]:
    match = _RANGE.match(body)
    if not match:
        return None
    if match.group(1) is not None:
        first, last, step = match.group(1), match.group(2), match.group(3)
        a, b = int(first), int(last)
        width = 0
        if any(len(x.lstrip("-")) > 1 and x.lstrip("-").startswith("0") for x in (first, last)):
            width = max(len(first), len(last))
        step_size = abs(int(step)) if step and int(step) else 1
        values = range(a, b + 1, step_size) if a <= b else range(a, b - 1, -step_size)
        return [str(v).zfill(width) if width else str(v) for v in values]
    a, b = ord(match.group(4)), ord(match.group(5))
    step = match.group(6)
    step_size = abs(int(step)) if step and int(step) else 1
    values = range(a, b + 1, step_size) if a <= b else range(a, b - 1, -step_size)
    return [chr(v) for v in values]


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion as webdataset's `braceexpand` does it, for shard lists.

    `{000000..000099}` (zero padded ranges, also `{a..e}` and `{0..10..2}`), `{a,b}` lists,
    nested and several groups. A `{...}` without a comma or range is literal. No braces:
    the pattern itself.
    """
    start = pattern.find("{")
    while start != -1:
        end = _matching_brace(pattern, start)
        if end == -1:
            return [pattern]
        body = pattern[start + 1 : end]
        items = _range_items(body)
        if items is None:
            alternatives = _split_top_level(body)
            if len(alternatives) > 1:
                items = [x for alternative in alternatives for x in expand_braces(alternative)]
        if items is not None:
            prefix, rest = pattern[:start], expand_braces(pattern[end + 1 :])
            return [prefix + item + tail for item in items for tail in rest]
        start = pattern.find("{", start + 1)
    return [pattern]
