"""scripts/bench as a package, one room per responsibility:

    cli.py        the command line and main()
    run.py        one run: its state, its order, the measuring around a mount, cleanup
    servers.py    the S3 server (moto, radosgw, --endpoint), the boto3 client, buckets, request counts
    systems.py    the systems under test and how each is mounted (s3fsmpu, s3fs, rclone, fuse_null)
    workloads.py  the data and the workloads: ceilings, then cp, cat, rsync, ls, bigdir per tool
    workloads_reads.py  reread and random: reading again, from the page cache and the data cache
    preader.py    random's reader (os.pread at seeded offsets), run as its own process
    measure.py    Sample, the stopwatch, CPU seconds, peak RSS, page cache, waiting for a quiet machine
    report.py     the table on stdout and bench-results/bench-<time>.json
    profiling.py  --profile: py-spy recordings and their summary
    common.py     paths, units, the progress log, run()
"""
