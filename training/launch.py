"""Entry point for multi-GPU / multi-node runs: the same job under ``accelerate launch``.

    accelerate launch --config_file training/accelerate/fsdp.yaml \\
        -m loradock.training.launch training/jobs/dates-lora.yaml [--resume]

Every process trains; only the main process evaluates, writes the card and publishes.
"""

from __future__ import annotations

import argparse
import logging
import sys

from loradock.errors import LoradockError


def main(argv: list[str] | None = None) -> int:
    from loradock.training.config import JobConfig
    from loradock.training.job import run_job

    parser = argparse.ArgumentParser(prog="loradock.training.launch", description=__doc__)
    parser.add_argument("job", help="the job YAML")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = run_job(JobConfig.from_yaml(args.job), resume=args.resume)
    except LoradockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result.repo_id:
        print(f"published {result.repo_id}@{result.sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
