"""Outliving a memory-mapped file that another program truncates while it is read.

Touching a page of a mapped file past the file's new end raises SIGBUS. Its default
action ends the process without a word, and Python cannot turn it into an exception:
a handler written in Python runs only later, and the faulting load is retried as soon
as the C-level handler returns, faulting again. So on Linux (x86-64 and AArch64, whose
``siginfo_t`` and ``struct sigaction`` layouts are written below) this module installs
a small native handler, compiled at run time with llvmlite:

- a fault at an address inside a map registered here (:func:`guard`) is answered by
  mapping zero-filled pages over the rest of that map, so that the load completes
  (reading zeros) and the program runs on; the map is marked as faulted, and
  :func:`faulted` says so, for the reader to refuse the results in one sentence;
- a fault anywhere else, or a remapping that fails, restores the SIGBUS action that
  stood before this module's (the default, or another handler such as Python's
  faulthandler): the retried load then goes to it, exactly as without this module.

Elsewhere, or where the handler cannot be built, :func:`guard` returns None and the
default action stands. The handler is installed on the first :func:`guard` and is
inherited by forked workers; a handler installed after it replaces it.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import sys
import threading

import llvmlite.binding as llvm
from llvmlite import ir

SLOTS = 256  # maps guarded at once; a further map is left unguarded
SIGBUS = 7  # on x86-64 and AArch64 Linux
SA_SIGINFO = 4
SIGINFO_ADDRESS_OFFSET = 16  # of si_addr
PROT_READ = 1
MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x02, 0x10, 0x20
SUPPORTED = sys.platform.startswith("linux") and platform.machine() in (
    "x86_64",
    "aarch64",
)


class _SigAction(ctypes.Structure):
    """glibc's ``struct sigaction`` on x86-64 and AArch64 Linux."""

    _fields_ = [
        ("handler", ctypes.c_void_p),
        ("mask", ctypes.c_ubyte * 128),
        ("flags", ctypes.c_int),
        ("restorer", ctypes.c_void_p),
    ]


class _Guard:
    """The compiled handler, kept alive with the registry it reads.

    The registry is ``SLOTS`` triples (start, end, faults) of 64-bit integers in the
    compiled module's memory; a slot whose end is 0 is free.
    """

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        module = llvm.parse_assembly(str(_handler_module(libc)))
        module.verify()
        machine = llvm.Target.from_default_triple().create_target_machine(opt=0)
        self._engine = llvm.create_mcjit_compiler(module, machine)
        self._engine.finalize_object()
        self.slots = (ctypes.c_int64 * (3 * SLOTS)).from_address(
            self._engine.get_global_value_address("maps")
        )
        self.lock = threading.Lock()
        action = _SigAction(
            handler=self._engine.get_function_address("on_bus_error"),
            flags=SA_SIGINFO,
        )
        previous = _SigAction.from_address(
            self._engine.get_global_value_address("previous")
        )  # what the handler restores for a fault that is not its own
        sigaction = libc.sigaction
        sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        if sigaction(SIGBUS, ctypes.byref(action), ctypes.byref(previous)) != 0:
            raise OSError(ctypes.get_errno(), "sigaction failed")


def _handler_module(libc: ctypes.CDLL):
    """The LLVM module of ``on_bus_error(signo, info, context)``, its registry
    ``maps`` and the SIGBUS action it replaced, ``previous``; libc's ``mmap`` and
    ``sigaction`` are called through their addresses in this process (the module is
    compiled here, never cached)."""
    i32, i64, byte_pointer = ir.IntType(32), ir.IntType(64), ir.IntType(8).as_pointer()

    def constant(value: int, kind=i64):
        return ir.Constant(kind, value)

    def libc_function(name: str, kind: ir.FunctionType):
        address = ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
        return builder.inttoptr(constant(address), kind.as_pointer())

    module = ir.Module("bus_errors")
    maps = ir.GlobalVariable(module, ir.ArrayType(i64, 3 * SLOTS), "maps")
    maps.initializer = ir.Constant(maps.value_type, None)
    previous = ir.GlobalVariable(
        module, ir.ArrayType(ir.IntType(8), ctypes.sizeof(_SigAction)), "previous"
    )
    previous.initializer = ir.Constant(previous.value_type, None)
    previous.align = ctypes.alignment(_SigAction)
    handler = ir.Function(
        module,
        ir.FunctionType(ir.VoidType(), [i32, byte_pointer, byte_pointer]),
        "on_bus_error",
    )
    entry, loop, test, found, remapped, next_slot, default = (
        handler.append_basic_block(name)
        for name in ("entry", "loop", "test", "found", "remapped", "next", "default")
    )
    _, info, _ = handler.args

    def field(offset: int, kind):
        return builder.load(
            builder.bitcast(builder.gep(info, [constant(offset)]), kind.as_pointer())
        )

    def slot_item(slot, item: int):
        return builder.gep(maps, [constant(0), builder.add(slot, constant(item))])

    builder = ir.IRBuilder(entry)
    address = field(SIGINFO_ADDRESS_OFFSET, i64)
    builder.branch(loop)

    builder.position_at_end(loop)  # slot = 0, 3, 6, ... while slot < 3 * SLOTS
    slot = builder.phi(i64)
    slot.add_incoming(constant(0), entry)
    builder.cbranch(
        builder.icmp_unsigned("<", slot, constant(3 * SLOTS)), test, default
    )

    builder.position_at_end(test)  # start <= address < end
    start = builder.load(slot_item(slot, 0))
    end = builder.load(slot_item(slot, 1))
    inside = builder.and_(
        builder.icmp_unsigned("<=", start, address),
        builder.icmp_unsigned("<", address, end),
    )
    builder.cbranch(inside, found, next_slot)

    builder.position_at_end(next_slot)
    following = builder.add(slot, constant(3))
    slot.add_incoming(following, next_slot)
    builder.branch(loop)

    builder.position_at_end(found)  # zero pages from the faulting one to the end
    page = builder.and_(address, constant(-mmap.PAGESIZE))
    mmap_type = ir.FunctionType(byte_pointer, [byte_pointer, i64, i32, i32, i32, i64])
    mapped = builder.call(
        libc_function("mmap", mmap_type),
        [
            builder.inttoptr(page, byte_pointer),
            builder.sub(end, page),
            constant(PROT_READ, i32),
            constant(MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, i32),
            constant(-1, i32),
            constant(0),
        ],
    )
    failed = builder.icmp_unsigned("!=", builder.ptrtoint(mapped, i64), page)
    builder.cbranch(failed, default, remapped)

    builder.position_at_end(remapped)
    builder.atomic_rmw("add", slot_item(slot, 2), constant(1), "seq_cst")
    builder.ret_void()

    builder.position_at_end(default)  # not ours: the action before ours, on the retry
    sigaction_type = ir.FunctionType(i32, [i32, byte_pointer, byte_pointer])
    builder.call(
        libc_function("sigaction", sigaction_type),
        [
            constant(SIGBUS, i32),
            builder.bitcast(previous, byte_pointer),
            ir.Constant(byte_pointer, None),
        ],
    )
    builder.ret_void()
    return module


_GUARD: _Guard | None = None
_UNAVAILABLE = not SUPPORTED
# One handler per process: two threads mapping their first files at once must not
# each build one, or the loser's code, freed, could be the one installed.
_INSTALLING = threading.Lock()


def _installed() -> _Guard | None:
    global _GUARD, _UNAVAILABLE
    if _GUARD is None and not _UNAVAILABLE:
        with _INSTALLING:
            if _GUARD is None and not _UNAVAILABLE:
                try:
                    _GUARD = _Guard()
                except Exception:  # no native target, no sigaction: unguarded
                    _UNAVAILABLE = True
    return _GUARD


def guard(start: int, length: int) -> int | None:
    """Register the mapped bytes ``[start, start + length)``: a truncation of the
    file under them then reads as zeros and marks the map, instead of ending the
    process.

    Parameters
    ----------
    start : int
        The map's first address.
    length : int
        Its length in bytes.

    Returns
    -------
    int or None
        The slot to give :func:`faulted` and :func:`release`; None where the map is
        not guarded (no handler here, or every slot taken).
    """
    installed = _installed()
    if installed is None or length <= 0:
        return None
    page = mmap.PAGESIZE
    end = -(-(start + length) // page) * page  # the map's last page, whole
    with installed.lock:
        slots = installed.slots
        for slot in range(0, 3 * SLOTS, 3):
            if slots[slot + 1] == 0:
                slots[slot + 2] = 0
                slots[slot] = start
                slots[slot + 1] = end  # written last: the slot is whole once it counts
                return slot
    return None


def faulted(slot: int | None) -> bool:
    """Whether a load in the map of ``slot`` found no file under it (the file was
    truncated, or a page could not be read), so that zeros were read in its place.

    Parameters
    ----------
    slot : int or None
        From :func:`guard`.
    """
    return slot is not None and _GUARD is not None and _GUARD.slots[slot + 2] > 0


def release(slot: int | None) -> None:
    """Free ``slot``: its map is gone.

    Parameters
    ----------
    slot : int or None
        From :func:`guard`.
    """
    if slot is not None and _GUARD is not None:
        _GUARD.slots[slot + 1] = 0
