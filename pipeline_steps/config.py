"""Load and validate params.yaml against workflow/schemas/params.schema.yaml.

The same validation runs in Snakemake (workflow/rules/common.smk) and in every step's CLI,
so a bad value stops the run with the key and the allowed values before any work starts.
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"


class ParamsError(ValueError):
    """params.yaml has a missing, unknown or out-of-range value."""


def _fill_defaults(validator_class: type) -> type:
    """A validator class that also writes each property's schema default into the instance."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # noqa: ANN001, ANN202
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _fill_defaults(jsonschema.Draft202012Validator)


def load_schema() -> dict[str, Any]:
    """The params schema (jsonschema, YAML-encoded)."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate_params(params: dict[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """Validate ``params`` (a copy gets the schema defaults filled in) and return it."""
    params = copy.deepcopy(params) if params is not None else {}
    errors = sorted(_Validator(load_schema()).iter_errors(params), key=lambda e: list(e.path))
    if errors:
        lines = []
        for err in errors:
            key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            allowed = err.schema.get("enum") if isinstance(err.schema, dict) else None
            hint = f" (allowed: {', '.join(map(str, allowed))})" if allowed else ""
            lines.append(f"  {key}: {err.message}{hint}")
        raise ParamsError(f"{source}: invalid parameters:\n" + "\n".join(lines))
    return params


def load_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Read a params file and validate it (defaults filled in)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: parameter file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    return validate_params(raw or {}, source=str(path))


def dataset_params(params: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The ``datasets.<dataset>`` section, with a clear error for an unknown name."""
    known = params["datasets"]
    if dataset not in known:
        raise ParamsError(f"dataset '{dataset}' is not in params datasets ({', '.join(known)})")
    return known[dataset]


def step_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every step takes (--params, --dataset)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="parameter file (params.yaml)")
    parser.add_argument("--dataset", required=True, help="dataset name from params datasets")
    return parser
