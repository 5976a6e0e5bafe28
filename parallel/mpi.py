"""Files spread over MPI ranks: rank r measures sources r, r + size, ...; rank 0
gathers every rank's batches (the merge puts them in input order)."""

from __future__ import annotations

from typing import Sequence

from .batches import Batch, packed_as_measured
from .measure_file import FileOutcome, MeasureRequest, measure_file, source_name


def run_mpi(sources: Sequence, request: MeasureRequest, comm) -> list[Batch] | None:
    """Every source measured over the ranks of ``comm``; rank 0 returns every batch,
    the other ranks None.

    Parameters
    ----------
    sources : sequence
        Reflection files (or tables), in input order.
    request : MeasureRequest
        What every rank needs to measure them.
    comm
        The MPI communicator (``MPI.COMM_WORLD``).
    """
    rank, size = comm.Get_rank(), comm.Get_size()

    def measured():
        for index in range(rank, len(sources), size):
            try:
                yield measure_file(index, sources[index], request, len(sources))
            except Exception as error:  # noqa: BLE001 (a rank that stopped here would leave the others waiting forever)
                yield FileOutcome(
                    index=index,
                    name=source_name(sources[index], index),
                    error=f"unexpected error: {type(error).__name__}: {error}",
                )

    gathered = comm.gather(packed_as_measured(measured()), root=0)
    if rank != 0:
        return None
    return [batch for batches in gathered for batch in batches]
