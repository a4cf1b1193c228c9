"""Index a dataset: samples, subjects, labels and subject-independent folds -> index.parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline_steps.atomic import atomic_path
from pipeline_steps.biovid import DatasetError, read_samples
from pipeline_steps.config import dataset_params, load_params, step_parser
from pipeline_steps.folds import assign_folds
from pipeline_steps.layout import layout_for


def build_index(ds: dict, cfg: dict) -> pd.DataFrame:
    """The index table of one dataset (see folds.assign_folds for the split columns)."""
    if ds["layout"] != "biovid":
        raise DatasetError(f"layout {ds['layout']!r}: only the biovid loader exists so far")
    root = Path(ds["root"])
    samples = read_samples(root, ds["classes"])
    missing = [p for p in samples["video"] if not (root / p).exists()]
    if missing:
        raise DatasetError(f"{root / missing[0]}: video not found ({len(missing)} missing)")
    return assign_folds(samples, cfg["n_folds"], cfg["n_val_subjects"], cfg["seed"])


def main(argv: list[str] | None = None) -> None:
    args = step_parser(__doc__).parse_args(argv)
    params = load_params(args.params)
    ds = dataset_params(params, args.dataset)
    index = build_index(ds, params["index_dataset"])
    layout = layout_for(params, args.dataset)
    with atomic_path(layout.index) as tmp:
        index.to_parquet(tmp, index=False)
    counts = index.groupby("test_fold")["subject"].nunique().tolist()
    print(
        f"[index_dataset] {args.dataset}: {len(index)} samples, "
        f"{index['subject'].nunique()} subjects, subjects per fold {counts} -> {layout.index}"
    )


if __name__ == "__main__":
    main()
