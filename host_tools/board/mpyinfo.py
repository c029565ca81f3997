"""What an .mpy file (format v6) asks of a board when it is imported.

A small reader of the layout that MicroPython's loader walks (py/persistentcode.c,
mp_raw_code_load and load_raw_code): header, qstr table, constant objects, then the
tree of raw code. For every function it reports its kind (bytecode, native, viper,
asm), the length of its code and, where the code carries one, its name.

What native code costs on an ESP32: the loader copies each native or viper function
into memory allocated with MALLOC_CAP_EXEC (ports/esp32/main.c,
esp_native_code_commit): the code rounded up to 4 bytes plus a 4-byte list link per
function, freed only at a soft reset (esp_native_code_free_all). On xtensawin the
bytecode-style prelude of a @native function is copied to the GC heap as well
(MICROPY_EMIT_NATIVE_PRELUDE_SEPARATE_FROM_MACHINE_CODE in py/mpconfig.h).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

KIND_BYTECODE = 0
KIND_NATIVE = 1
KIND_VIPER = 2
KIND_ASM = 3
KIND_NAMES = {KIND_BYTECODE: "bytecode", KIND_NATIVE: "native", KIND_VIPER: "viper",
              KIND_ASM: "asm"}

# py/persistentcode.h
_ARCH_FLAGS = 0x40
_OBJ_STR = 5
_OBJ_BYTES = 6
_OBJ_TUPLE = 10
_OBJ_NO_DATA = (0, 1, 2, 3, 4)  # fun table, None, False, True, Ellipsis
# py/runtime0.h, scope flags of viper and asm code loaded from an .mpy
_VIPER_RELOC = 0x10
_VIPER_RODATA = 0x20
_VIPER_BSS = 0x40
_NODE_LINK = 4  # native_code_node_t.next on a 32-bit chip


class MpyError(ValueError):
    """Not an .mpy file this reader understands."""


@dataclass
class RawCode:
    kind: int
    length: int  # bytes of bytecode or machine code (prelude included for native)
    name: str = ""  # "" for viper and asm code, which carries no prelude
    prelude_bytes: int = 0  # native: the prelude's share of length
    rodata_bss: int = 0  # viper: constant data and zeroed data (GC heap)
    children: list[RawCode] = field(default_factory=list)

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass
class MpyFile:
    version: int
    arch: int
    qstrs: list[str]
    root: RawCode

    def native(self) -> list[RawCode]:
        return [rc for rc in self.root.walk() if rc.kind != KIND_BYTECODE]

    def exec_bytes(self) -> int:
        """Executable memory the ESP32 loader allocates for this file's native code."""
        return sum(exec_bytes(rc.length) for rc in self.native())


def exec_bytes(length: int) -> int:
    return _NODE_LINK + ((length + 3) & ~3)


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise MpyError("truncated .mpy file")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MpyError("truncated .mpy file")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self) -> int:
        n = 0
        while True:
            b = self.byte()
            n = (n << 7) | (b & 0x7F)
            if not b & 0x80:
                return n


def _uint_at(buf: bytes, i: int) -> tuple[int, int]:
    n = 0
    while True:
        b = buf[i]
        i += 1
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            return n, i


def _sig_flags(buf: bytes, i: int) -> tuple[int, int]:
    """Scope flags from a prelude signature (py/bc.h MP_BC_PRELUDE_SIG_DECODE_INTO)."""
    z = buf[i]
    i += 1
    flags = 0
    n = 0
    while z & 0x80:
        z = buf[i]
        i += 1
        flags |= ((z & 0x40) >> 6) << n
        n += 1
    return flags, i


def _prelude_name(buf: bytes, i: int, qstrs: list[str]) -> str:
    # signature, then the size pair (py/bc.h MP_BC_PRELUDE_SIZE_DECODE), then the
    # source info section, which opens with the function's name as a qstr index
    _, i = _sig_flags(buf, i)
    while buf[i] & 0x80:
        i += 1
    i += 1
    q, _ = _uint_at(buf, i)
    return qstrs[q] if q < len(qstrs) else "?"


def _skip_obj(r: _Reader) -> None:
    kind = r.byte()
    if kind in _OBJ_NO_DATA:
        return
    n = r.uint()
    if kind == _OBJ_TUPLE:
        for _ in range(n):
            _skip_obj(r)
        return
    r.take(n)
    if kind in (_OBJ_STR, _OBJ_BYTES):
        r.byte()  # the terminating zero


def _skip_relocs(r: _Reader) -> None:
    # py/persistentcode.c mp_native_relocate: ops until 0xff
    while True:
        op = r.byte()
        if op == 0xFF:
            return
        if op & 1:
            r.uint()
        op >>= 1
        if op <= 5 and op & 1:
            r.uint()


def _raw_code(r: _Reader, qstrs: list[str]) -> RawCode:
    kind_len = r.uint()
    kind = kind_len & 3
    has_children = bool(kind_len & 4)
    length = kind_len >> 3
    code = r.take(length)
    rc = RawCode(kind, length)
    flags = 0
    if kind == KIND_BYTECODE:
        rc.name = _prelude_name(code, 0, qstrs)
    elif kind == KIND_NATIVE:
        off = r.uint()
        rc.prelude_bytes = length - off
        # a native function's own flags live in its prelude; relocation is viper's
        rc.name = _prelude_name(code, off, qstrs)
    else:
        flags = r.uint()
        if kind == KIND_ASM:
            r.uint()
            r.uint()
    if kind == KIND_VIPER:
        rodata = r.uint() if flags & _VIPER_RODATA else 0
        bss = r.uint() if flags & _VIPER_BSS else 0
        rc.rodata_bss = rodata + bss
        r.take(rodata)
    if has_children:
        for _ in range(r.uint()):
            rc.children.append(_raw_code(r, qstrs))
    if kind != KIND_BYTECODE and flags & _VIPER_RELOC:
        _skip_relocs(r)
    return rc


def parse(data: bytes) -> MpyFile:
    if len(data) < 4 or data[0] != ord("M"):
        raise MpyError("not an .mpy file")
    if data[1] != 6:
        raise MpyError(f".mpy version {data[1]}, this reader knows 6")
    r = _Reader(data)
    r.take(4)
    if data[2] & _ARCH_FLAGS:
        r.uint()
    n_qstr = r.uint()
    n_obj = r.uint()
    qstrs: list[str] = []
    for _ in range(n_qstr):
        n = r.uint()
        if n & 1:
            qstrs.append(f"<static {n >> 1}>")
        else:
            qstrs.append(r.take(n >> 1).decode("utf-8", "replace"))
            r.byte()
    for _ in range(n_obj):
        _skip_obj(r)
    root = _raw_code(r, qstrs)
    if r.pos != len(data):
        raise MpyError(f"{len(data) - r.pos} bytes left after the code tree")
    return MpyFile(data[1], (data[2] >> 2) & 0x2F, qstrs, root)


def parse_file(path: Path) -> MpyFile:
    return parse(Path(path).read_bytes())
