"""Create a fresh MLflow parent run for a pipeline run (called once, before jobs fan out)."""

from __future__ import annotations

from pipeline_steps.config import dataset_params, load_params, step_parser
from pipeline_steps.layout import layout_for
from pipeline_steps.tracking import open_parent_run, tracking_uri


def main(argv: list[str] | None = None) -> None:
    args = step_parser(__doc__).parse_args(argv)
    params = load_params(args.params)
    dataset_params(params, args.dataset)
    run_id = open_parent_run(params, args.dataset, layout_for(params, args.dataset))
    print(f"[open_run] {args.dataset}: MLflow parent run {run_id} at {tracking_uri()}")


if __name__ == "__main__":
    main()
