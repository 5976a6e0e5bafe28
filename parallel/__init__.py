"""Many reflection files: measured one by one, spread over processes or MPI ranks, and
merged exactly.

In the direction data flows::

    measure_file  one table (and its experiments) -> a FileOutcome
    batches       outcomes packed a few dozen files at a time, to cross processes
    pool, mpi     the files spread over nproc processes, or over MPI ranks
    merge         every batch's rows in input order: the same as measuring all together
    run           options in, AnalysisResult out: the whole analysis of many sources
    tuning        process-level tricks, each with the benchmark figure that keeps it
"""
