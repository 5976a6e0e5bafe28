"""Loads of little-endian numbers at any byte offset of a uint8 array, for the kernels.

Pixel arrays sit in the ``Shoebox<>`` column at arbitrary byte offsets (records are
packed back to back), so a float32 cannot be read through a view of the blob (a float32
view at an unaligned offset lets the compiler assume an alignment that is not there).
Each is read by one load that the compiler is told may be unaligned; assembling the four
bytes with shifts and reinterpreting them gave the same numbers and took half as long
again. The file's numbers are little-endian, like every host numba supports here
(checked on import). The blob may be a read-only memory map: nothing here writes to it,
and the callers check that every record lies inside it.
"""

from __future__ import annotations

import sys

from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

if sys.byteorder != "little":  # the loads below read the file's little-endian numbers
    raise ImportError("the shoebox kernels need a little-endian host")


def _load(blob, position, llvm_type, numba_type):
    """The typing and code of one unaligned load of ``numba_type`` (None: not for
    these argument types)."""
    if not isinstance(blob, types.Array) or blob.dtype != types.uint8:
        return None
    if blob.ndim != 1 or blob.layout != "C":
        return None
    if not isinstance(position, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        offset = context.cast(builder, args[1], signature.args[1], types.intp)
        address = builder.gep(array.data, [offset])
        pointer = builder.bitcast(address, llvm_type.as_pointer())
        return builder.load(pointer, align=1)

    return numba_type(blob, position), codegen


@intrinsic
def float32_at(typingctx, blob, position):
    """The float32 at byte ``position`` of the contiguous uint8 array ``blob``, at
    any alignment."""
    return _load(blob, position, ir.FloatType(), types.float32)


@intrinsic
def int32_at(typingctx, blob, position):
    """The int32 at byte ``position`` of the contiguous uint8 array ``blob``, at any
    alignment."""
    return _load(blob, position, ir.IntType(32), types.int32)
