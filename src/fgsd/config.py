"""Load params.yaml plus overlays into one resolved config, and say which keys each stage reads.

One config flow: every stage and the Snakefile call `load()` on the same list of files, so what
Snakemake tracks and what the stage uses cannot drift apart. A stage is handed only the keys
`stages.py` declares for it (`restrict`), so it cannot read a key that Snakemake, DVC and the
provenance record do not track.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from pathlib import Path

import yaml

from .errors import FgsdError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.yaml"


class Loader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, but numbers as YAML 1.2 reads them: `1e-4` and `1e6` are
    floats (YAML 1.1 wants `1.0e-4`), as researchers write them and as DVC writes `-S` values."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF)|[-+]\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


# Only the exponent forms YAML 1.1 leaves as strings (1e-4, 2.5E3): every other number another
# reader already parsed, and a quoted "0.5" stays the string its author asked for.
_NUMBER = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def coerce_numbers(node):
    """What `Loader` would have read: strings that are YAML 1.2 numbers become floats (for a
    config parsed by another YAML reader, e.g. Snakemake's)."""
    if isinstance(node, dict):
        return {k: coerce_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [coerce_numbers(v) for v in node]
    if isinstance(node, str) and _NUMBER.match(node):
        return float(node)
    return node


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FgsdError(f"params file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=Loader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise FgsdError(f"{where}: not valid YAML: {what}") from None
    if not isinstance(data, dict):
        raise FgsdError(f"{path}: top level must be a mapping of keys")
    return data


def _merge(base: dict, overlay: dict) -> None:
    """Overlay `overlay` onto `base` in place (mappings merge, anything else replaces)."""
    for key, value in overlay.items():
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def load(paths: list[str | Path]) -> dict:
    """Merge params files left to right, then validate the result against the schema."""
    if not paths:
        raise FgsdError("no params file given")
    raw = [_read_yaml(p) for p in paths]
    cfg = copy.deepcopy(raw[0])
    for overlay in raw[1:]:
        _merge(cfg, overlay)
    validate(cfg, paths, raw)
    check(cfg, paths, raw)
    return cfg


@functools.cache
def schema() -> dict:
    if not SCHEMA.is_file():
        raise FgsdError(f"params schema not found: {SCHEMA} (run from a checkout of the repository)")
    return yaml.safe_load(SCHEMA.read_text())


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string",
               "object": "a mapping", "array": "a list", "null": "null"}


def _dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _origin(path: list, paths: list, raw: list[dict]) -> str:
    """The last params file that sets `path` (the one to fix), else the first."""
    for file, data in reversed(list(zip(paths, raw))):
        node, found = data, True
        for part in path:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                found = False
                break
        if found:
            return str(file)
    return str(paths[0])


def _describe(error) -> tuple[list, str]:
    """One jsonschema error as (path of the culprit key, what is wrong), in the words of params.yaml."""
    path, kind, rule, value = list(error.absolute_path), error.validator, error.validator_value, error.instance
    if kind == "additionalProperties":
        extra = sorted(set(value) - set(error.schema.get("properties", {})))
        return path + extra[:1], "unknown parameter '{key}' (not in params.yaml)"
    if kind == "required":
        missing = [k for k in rule if k not in value]
        return path + missing[:1], "missing parameter '{key}'"
    got = f", got {value!r}"
    what = {
        "type": lambda: "must be " + " or ".join(_TYPE_NAMES[t] for t in ([rule] if isinstance(rule, str) else rule)),
        "enum": lambda: "must be one of " + ", ".join(map(str, rule)),
        "minimum": lambda: f"must be >= {rule}",
        "exclusiveMinimum": lambda: f"must be > {rule}",
        "maximum": lambda: f"must be <= {rule}",
        "exclusiveMaximum": lambda: f"must be < {rule}",
        "multipleOf": lambda: f"must be a multiple of {rule}",
        "minItems": lambda: f"must list at least {rule} item(s)",
        "maxItems": lambda: f"must list at most {rule} item(s)",
        "uniqueItems": lambda: "must not repeat items",
        "minLength": lambda: "must not be empty",
    }.get(kind, lambda: error.message)()
    return path, f"parameter '{{key}}' {what}{got}"


def validate(cfg: dict, paths: list, raw: list[dict]) -> None:
    """Check the merged config against workflow/schemas/params.schema.yaml (the file Snakemake's
    `validate` reads); the first violation becomes one line naming the file and the key."""
    import jsonschema
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        path, message = _describe(errors[0])
        raise FgsdError(f"{_origin(path, paths, raw)}: " + message.format(key=_dotted(path)))


def check(cfg: dict, paths: list, raw: list[dict]) -> None:
    """Checks that relate keys, or a key to the disk, which the schema cannot express. Each error
    names the file that set the value: for a relation, the last file that set either key."""
    def need(cond, key, what, *related):
        if not cond:
            origins = [_origin(k.split("."), paths, raw) for k in (key, *related)]
            origin = max(origins, key=lambda f: [str(p) for p in paths].index(f))
            raise FgsdError(f"{origin}: parameter '{key}' {what}, got {get(cfg, key)!r}")
    d, s, a = cfg["data"], cfg["sampling"], cfg["analysis"]
    need(d["dataset"] != "folder" or d["folder"], "data.folder", "must name a directory when data.dataset is folder",
         "data.dataset")
    need(d["dataset"] != "folder" or Path(d["folder"]).expanduser().is_dir(), "data.folder",
         "is not an existing directory")
    need(cfg["seed"] not in cfg["train"]["replicate_seeds"], "train.replicate_seeds",
         "must not repeat the main 'seed' (its models are the first replicate)", "seed")
    need(s["sigma_final"] < s["sigma0"], "sampling.sigma_final", "must be below sampling.sigma0", "sampling.sigma0")
    need(a["kl_sigma_min"] < a["kl_sigma_max"], "analysis.kl_sigma_min", "must be below analysis.kl_sigma_max",
         "analysis.kl_sigma_max")
    t = cfg["train"]
    need(t["sigma_law"] == "square" or t["sigma_min"] < t["sigma_max"], "train.sigma_min",
         f"must be below train.sigma_max (train.sigma_law: {t['sigma_law']} draws log-uniformly between them)", "train.sigma_max",
         "train.sigma_law")
    st = cfg["study"]
    need(max(st["sigmas"]) <= st["sigma_max"], "study.sigmas", "must not go above study.sigma_max (the study's "
         "models train up to it)", "study.sigma_max")
    g = cfg["guide"]
    need(all(g["width"] * m % g["groups"] == 0 for m in g["channel_mult"]), "guide.groups",
         "must divide the width of every guide level (guide.width x guide.channel_mult)", "guide.width")
    need(d["crop_size"] % 2 ** (len(g["channel_mult"]) - 1) == 0, "guide.channel_mult",
         "has more levels than halvings of data.crop_size", "data.crop_size")
    need(cfg["d2c"]["width"] % cfg["d2c"]["groups"] == 0, "d2c.groups", "must divide d2c.width", "d2c.width")
    need((d["crop_size"] // 2) % 8 == 0, "data.crop_size", "must be a multiple of 16 for the D2C prior (its UNet "
         "pools the half-size latent three times)")
    weights = cfg["evaluate"]["inception_weights"]
    need(weights is None or Path(weights).expanduser().is_file(), "evaluate.inception_weights",
         "is not an existing file (null = in-domain features only)")


def get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


class Params(dict):
    """A params subtree that names the key a stage tried to read without declaring it."""

    def __init__(self, data: dict, prefix: str, who: str):
        super().__init__({k: Params(v, f"{prefix}{k}.", who) if isinstance(v, dict) else v for k, v in data.items()})
        self.prefix, self.who = prefix, who

    def __missing__(self, key):
        raise FgsdError(f"{self.who} read params key '{self.prefix}{key}', which fgsd/stages.py does not declare "
                        "for it (add it to the stage's keys, so Snakemake, DVC and provenance track it)")


def restrict(cfg: dict, keys: list[str], who: str) -> Params:
    """The config with only `keys` (dotted) in it; reading any other key is an error naming it."""
    out: dict = {}
    for dotted in keys:
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = copy.deepcopy(get(cfg, dotted))
    return Params(out, "", who)


def _canonical(value):
    return {k: _canonical(value[k]) for k in sorted(value)} if isinstance(value, dict) else value


def select(cfg: dict, keys: list[str]) -> dict:
    """The sub-config made of `keys` (dotted), as a flat dict with sorted keys: what a stage's
    result depends on. Sorted, so the key order of an overlay file does not look like a change."""
    return {k: _canonical(get(cfg, k)) for k in keys}


def digest(obj) -> str:
    """Short stable hash of a JSON-able object (params subtrees, for resume and provenance)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def snakemake_params_files(workflow, config: dict) -> list[str]:
    """params.yaml plus the `--configfile` overlays, checked to give exactly Snakemake's config.

    Stages get the file list, not values, so `--config key=value` (which would reach Snakemake
    but not the stages) is refused with a pointer to overlays."""
    try:
        return _params_files(workflow, config)
    except FgsdError as e:  # one line, not a traceback through the Snakefile
        raise SystemExit(f"error: {e}") from None


def _params_files(workflow, config: dict) -> list[str]:
    cwd = Path.cwd()
    paths = ["params.yaml"]
    for p in workflow.overwrite_configfiles:
        p = Path(p)
        p = p.relative_to(cwd) if p.is_absolute() and p.is_relative_to(cwd) else p
        if str(p) != "params.yaml":
            paths.append(str(p))
    merged = load(paths)
    if merged != coerce_numbers(config):
        raise FgsdError("--config overrides are not passed to the stages: put the keys in a YAML "
                        "overlay and pass it with --configfile (see config/smoke.yaml)")
    config.update(merged)  # numbers as the stages read them (1e-4), so Snakemake's validate agrees
    return paths
