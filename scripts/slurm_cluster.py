"""Start a dask cluster whose workers are Slurm jobs (dask-jobqueue), for ``execution.backend: dask``; keep it up.

vent only connects to a cluster; it never submits jobs. This script is the example of starting one: it runs the dask
scheduler in its own process (run it inside a long, small Slurm job, or on a login node in tmux), submits ``--jobs``
worker jobs of ``--cores`` cores each, prints the scheduler's address (and writes it to ``--address-file``), and waits
until Ctrl-C or the end of its own time, then cancels the worker jobs.

Each Slurm job runs ``--processes`` dask worker processes of ONE task thread each (``--nthreads 1``), so a worker runs
one vent task (a case, a registration, a fold) at a time, and the task's own threads (numba, torch, BLAS, elastix)
are ``execution.threads``: the script prints the value to use, ``cores // processes``. The run folder, the data and
the venv must be on a filesystem that every node mounts at the same path (workers write their cases' files there).

Usage::

    pip install -e '.[cluster]'
    python scripts/slurm_cluster.py --jobs 8 --cores 8 --memory 32GB --walltime 08:00:00 --queue compute \\
        --address-file runs/pet/scheduler.txt
    # prints: vent run CONFIG --set execution.backend=dask --set execution.scheduler_address=tcp://... \\
    #             --set execution.threads=8
    python scripts/slurm_cluster.py --dry-run   # print the worker job script only (no scheduler, no job)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="worker jobs to submit (default 4)")
    parser.add_argument("--cores", type=int, default=8, help="cores per job (default 8)")
    parser.add_argument("--processes", type=int, default=1,
                        help="dask worker processes per job, one task each (default 1: a task gets every core)")
    parser.add_argument("--memory", default="32GB", help="memory per job (default 32GB; a full-size patient's "
                        "radiomics holds about 1 GB per task)")
    parser.add_argument("--walltime", default="04:00:00", help="per worker job (default 04:00:00)")
    parser.add_argument("--queue", default=None, help="Slurm partition")
    parser.add_argument("--account", default=None, help="Slurm account")
    parser.add_argument("--job-extra", action="append", default=[],
                        help="an extra #SBATCH directive, e.g. --job-extra=--gres=gpu:1 (repeatable)")
    parser.add_argument("--prologue", action="append", default=[],
                        help="a shell line run before the worker, e.g. 'source /shared/vent/.venv/bin/activate'")
    parser.add_argument("--interface", default=None, help="network interface of scheduler and workers, e.g. ib0")
    parser.add_argument("--port", type=int, default=8786, help="scheduler port (default 8786; 0 = any)")
    parser.add_argument("--address-file", type=Path, default=None, help="write the scheduler address here")
    parser.add_argument("--dry-run", action="store_true", help="print the worker job script and exit")
    return parser


def make_cluster(args: argparse.Namespace):
    """The SLURMCluster (scheduler started, no job submitted yet)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        sys.exit("scripts/slurm_cluster.py needs dask-jobqueue: pip install -e '.[cluster]'")

    return SLURMCluster(
        cores=args.cores,
        processes=args.processes,
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        interface=args.interface,
        scheduler_options={"port": args.port} if not args.dry_run else {"port": 0},
        job_extra_directives=args.job_extra,
        job_script_prologue=args.prologue,
        worker_extra_args=["--nthreads", "1"],  # one vent task per worker process; its threads: execution.threads
    )


def main() -> None:
    args = _parser().parse_args()
    cluster = make_cluster(args)
    threads = max(1, args.cores // args.processes)
    if args.dry_run:
        print(cluster.job_script())
        cluster.close()
        return
    cluster.scale(jobs=args.jobs)
    address = cluster.scheduler_address
    if args.address_file is not None:
        args.address_file.parent.mkdir(parents=True, exist_ok=True)
        args.address_file.write_text(address + "\n")
    print(f"scheduler at {address}; {args.jobs} worker job(s) of {args.processes} process(es) submitted")
    print(f"vent run CONFIG --set execution.backend=dask --set execution.scheduler_address={address} "
          f"--set execution.threads={threads}")
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.close()  # cancels the worker jobs


if __name__ == "__main__":
    main()
