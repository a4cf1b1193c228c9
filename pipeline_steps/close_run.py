"""End the MLflow parent run of a pipeline run: FINISHED on success, FAILED on error.

Snakemake calls it from ``onsuccess`` / ``onerror`` for every dataset of the run; under DVC the
report stage (the last stage of a dataset) ends its parent run FINISHED.
"""

from __future__ import annotations

from pipeline_steps.config import dataset_params, load_params, step_parser
from pipeline_steps.layout import layout_for
from pipeline_steps.tracking import close_parent_run


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__.splitlines()[0])
    parser.add_argument("--status", choices=("FINISHED", "FAILED"), default="FINISHED")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    dataset_params(params, args.dataset)
    run_id = close_parent_run(layout_for(params, args.dataset), args.status)
    if run_id:
        print(f"[close_run] {args.dataset}: MLflow parent run {run_id} ended ({args.status})")


if __name__ == "__main__":
    main()
