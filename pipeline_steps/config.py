"""Load and validate params.yaml against workflow/schemas/params.schema.yaml.

The same validation runs in Snakemake (workflow/rules/common.smk) and in every step's CLI,
so a bad value stops the run with the key and the allowed values before any work starts.

A params file that validated once is not validated again: its filled-in result is kept in a
cache (``$MTPKDOT_CACHE_DIR``, default ``~/.cache/mtpkdot``) keyed by the file's bytes, the
schema's and this module's, and the installed jsonschema; every job of a run reads the same
file, and importing jsonschema and yaml costs each job about 0.2 CPU s before its work.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from pipeline_steps.atomic import write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"


class ParamsError(ValueError):
    """params.yaml has a missing, unknown or out-of-range value."""


def _fill_defaults(validator_class: type) -> type:
    import jsonschema

    """A validator class that also writes each property's schema default into the instance."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # noqa: ANN001, ANN202
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


@functools.cache
def _validator() -> type:
    import jsonschema

    return _fill_defaults(jsonschema.Draft202012Validator)


def load_schema() -> dict[str, Any]:
    """The params schema (jsonschema, YAML-encoded)."""
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text())


def _error_lines(errors: list, prefix: tuple = ()) -> list[str]:  # noqa: ANN001
    lines = []
    for err in sorted(errors, key=lambda e: list(e.path)):
        key = ".".join(str(p) for p in (*prefix, *err.absolute_path)) or "<top level>"
        allowed = err.schema.get("enum") if isinstance(err.schema, dict) else None
        hint = f" (allowed: {', '.join(map(str, allowed))})" if allowed else ""
        lines.append(f"  {key}: {err.message}{hint}")
    return lines


def validate_params(params: dict[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """Validate ``params`` (a copy gets the schema defaults filled in) and return it.

    A dataset's ``demo_settings`` are checked as what they are: ``make_demo_data`` keys.
    """
    params = copy.deepcopy(params) if params is not None else {}
    schema = load_schema()
    lines = _error_lines(list(_validator()(schema).iter_errors(params)))
    if not lines:
        demo_schema = schema["properties"]["make_demo_data"]
        for name, ds in params["datasets"].items():
            merged = {**params["make_demo_data"], **ds.get("demo_settings", {})}
            found = list(_validator()(demo_schema).iter_errors(merged))
            lines += _error_lines(found, ("datasets", name, "demo_settings"))
    if lines:
        raise ParamsError(f"{source}: invalid parameters:\n" + "\n".join(lines))
    return params


def load_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Read a params file and validate it (defaults filled in)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: parameter file not found")
    text = path.read_bytes()
    cached = _cache_path(text)
    if cached is not None and cached.exists():
        try:
            return json.loads(cached.read_text())
        except (OSError, ValueError):
            pass  # unreadable or half-written by an old version: validate again
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    params = validate_params(raw or {}, source=str(path))
    encoded = json.dumps(params)  # insertion order kept; cached only if it reads back equal
    if cached is not None and json.loads(encoded) == params:
        with contextlib.suppress(OSError):  # a read-only cache only costs time
            write_text(cached, encoded)
    return params


def _cache_path(text: bytes) -> Path | None:
    """Where the validated result of a params file with bytes ``text`` is kept, if anywhere."""
    root = os.environ.get("MTPKDOT_CACHE_DIR")
    if root == "":
        return None
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mtpkdot"
    digest = hashlib.sha256(text)
    for part in (SCHEMA_PATH, Path(__file__)):
        digest.update(part.read_bytes())
    spec = importlib.util.find_spec("jsonschema")
    if spec is None or spec.origin is None:
        return None
    digest.update(f"{spec.origin}:{os.stat(spec.origin).st_mtime_ns}".encode())
    return Path(root) / "params" / f"{digest.hexdigest()}.json"


def dataset_params(params: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The ``datasets.<dataset>`` section, with a clear error for an unknown name."""
    known = params["datasets"]
    if dataset not in known:
        raise ParamsError(f"dataset '{dataset}' is not in params datasets ({', '.join(known)})")
    return known[dataset]


def merge_config(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` on top, as Snakemake merges ``--configfile``: mappings merge
    key by key, any other value (lists included) replaces the base's."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def demo_settings(params: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The ``make_demo_data`` section as one demo dataset sees it: the section, with that
    dataset's ``demo_settings`` on top (e.g. one dataset per demo scenario in one run)."""
    return {**params["make_demo_data"], **dataset_params(params, dataset).get("demo_settings", {})}


def step_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every step takes (--params, --dataset)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="parameter file (params.yaml)")
    parser.add_argument("--dataset", required=True, help="dataset name from params datasets")
    return parser


def student_seeds(params: dict[str, Any]) -> list[int]:
    """The student seeds (``run.seeds``): every student and its evaluation run once per seed;
    teachers, the fusion teacher and the aligned pool are trained once per fold (``run.seed``)."""
    return [int(s) for s in params["run"]["seeds"]]


def shared_run_params(params: dict[str, Any]) -> dict[str, Any]:
    """``run`` without ``seeds``: what a job's results depend on, so that adding a student
    seed adds jobs and reruns none (Snakemake params, resume keys)."""
    return {k: v for k, v in params["run"].items() if k != "seeds"}
