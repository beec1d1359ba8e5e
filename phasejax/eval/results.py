"""results.json: the one results file of a training run (schema in notes/CD_contract.md).

```
{"classes": ["EAP","LAP","PVP","DP"], "label_set": "paper4", "strategy": "two_step",
 "train": {"steps": int, "wall_time_s": float, "images_per_s": float, "best_step": int,
           "best_val_accuracy": float | null},
 "splits": {"test": {"metrics": summarize(...) + {"per_site": {...}},
                     "predictions": [{"series_id", "patient_id", "site",
                                      "label": "EAP" or "" (unlabelled), "probs": [K floats]}]},
            "val": {...}, "external": {...}}}
```

Written by training (via `split_results` + `make_results` + `write_results`), read by
`phasejax figures` and `phasejax reproduce`. Every figure and table is redrawn from the
predictions and metrics stored here, never from a live model. Undefined numbers are null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phasejax import atomic
from phasejax.eval.metrics import per_site_accuracy, summarize
from phasejax.eval.stats import compare_paired, jsonable
from phasejax.phases import LABEL_SETS

RESULTS_FILE = "results.json"
TRAIN_KEYS = ("steps", "wall_time_s", "images_per_s", "best_step", "best_val_accuracy")
PREDICTION_KEYS = ("series_id", "patient_id", "site", "label", "probs")
_MAX_REPORTED = 12  # problems listed in one error message


class ResultsError(ValueError):
    """A results file or dict that does not follow the schema; the message lists why."""


# --------------------------------------------------------------------------- building


def predictions_from_rows(
    rows: Sequence[Mapping[str, str]], probs: np.ndarray, classes: Sequence[str]
) -> list[dict]:
    """Prediction records from manifest rows (series_id, patient_id, site, phase) and probs [N, K].

    A row's phase becomes `label` ("" when unlabelled). A phase outside `classes` is an error:
    the pipeline's split_rows already filters to the label set, so one here means the rows and
    probabilities are misaligned or come from a different label set.
    """
    probs = np.asarray(probs, dtype=np.float64)
    classes = list(classes)
    if probs.shape != (len(rows), len(classes)):
        raise ValueError(
            f"probs has shape {probs.shape}, expected ({len(rows)}, {len(classes)}) "
            f"for {len(rows)} rows and classes {classes}"
        )
    out = []
    for row, p in zip(rows, probs):
        label = row.get("phase", "") or ""
        if label and label not in classes:
            raise ValueError(
                f"series {row.get('series_id')!r} has phase {label!r}, not in classes {classes}"
            )
        out.append(
            {
                "series_id": str(row["series_id"]),
                "patient_id": str(row.get("patient_id", "")),
                "site": str(row.get("site", "")),
                "label": label,
                "probs": [float(v) for v in p],
            }
        )
    return out


def split_results(
    predictions: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """{"metrics", "predictions"} of one split: summarize() (bootstrap by patient_id) plus
    metrics["per_site"] (accuracy with Wilson interval per site). Called by the trainer."""
    preds = [_clean_prediction(p) for p in predictions]
    split = {"metrics": {}, "predictions": preds}
    problems = _check_split(split, list(classes), "split")
    if problems:
        raise ResultsError(_format("predictions", problems))
    y_true, probs, patient_ids, sites, _ = predictions_arrays(split, classes)
    metrics = summarize(y_true, probs, classes, patient_ids, n_bootstrap=n_bootstrap, seed=seed)
    pred = probs.argmax(1) if len(preds) else np.zeros(0, np.int64)
    metrics["per_site"] = per_site_accuracy(y_true, pred, sites)
    return {"metrics": metrics, "predictions": preds}


def _clean_prediction(p: Mapping[str, Any]) -> dict:
    out = {k: p[k] for k in PREDICTION_KEYS if k in p}
    if "probs" in out:
        out["probs"] = [float(v) for v in np.asarray(out["probs"]).reshape(-1)]
    for k in ("series_id", "patient_id", "site", "label"):
        if k in out and out[k] is None:
            out[k] = ""
    return out


def make_results(
    *,
    classes: Sequence[str],
    label_set: str,
    strategy: str,
    train: Mapping[str, Any],
    splits: Mapping[str, Mapping[str, Any]],
) -> dict:
    """Assemble and validate a results dict (see the module docstring)."""
    results = jsonable(
        {
            "classes": list(classes),
            "label_set": label_set,
            "strategy": strategy,
            "train": dict(train),
            "splits": {k: dict(v) for k, v in splits.items()},
        }
    )
    validate_results(results)  # type: ignore[arg-type]
    return results  # type: ignore[return-value]


def ensemble_results(
    members: Sequence[Mapping[str, Any]], *, n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """The results of a seed ensemble: in every split each series' probabilities averaged
    over the members (the arithmetic mean, as `phasejax.ablate.summarize.ensemble`), in the
    first member's order, and the metrics recomputed from them (`split_results`).

    The members must share classes, label set, strategy, splits, series and labels (runs of
    one config on one cohort that differ in `train.seed`); anything else is a ValueError.
    `train` holds the members' summed wall time, their mean training images/s, their step
    count, `members` (how many), and null best step and validation accuracy (each member
    picked its own checkpoint)."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0]
    for i, m in enumerate(members[1:], start=1):
        for key in ("classes", "label_set", "strategy"):
            if m[key] != first[key]:
                raise ValueError(
                    f"ensemble member {i} has {key} {m[key]!r}, member 0 {first[key]!r}"
                )
        if set(m["splits"]) != set(first["splits"]):
            raise ValueError(
                f"ensemble member {i} has splits {sorted(m['splits'])}, "
                f"member 0 {sorted(first['splits'])}"
            )
    classes = first["classes"]
    splits = {}
    for name, split in first["splits"].items():
        preds = [dict(p) for p in split["predictions"]]
        label = {p["series_id"]: p["label"] for p in preds}
        stacked = []
        for i, m in enumerate(members):
            own = {p["series_id"]: p for p in m["splits"][name]["predictions"]}
            if set(own) != set(label) or any(own[s]["label"] != label[s] for s in label):
                raise ValueError(
                    f"ensemble member {i} was evaluated on other series or labels in split "
                    f"{name!r} than member 0"
                )
            stacked.append([own[p["series_id"]]["probs"] for p in preds])
        mean = np.mean(np.asarray(stacked, dtype=np.float64), axis=0)
        for p, probs in zip(preds, mean):
            p["probs"] = probs.tolist()
        splits[name] = split_results(preds, classes, n_bootstrap=n_bootstrap, seed=seed)
    rates = [m["train"].get("images_per_s") for m in members]
    train = {
        "steps": first["train"].get("steps"),
        "wall_time_s": sum(float(m["train"].get("wall_time_s") or 0.0) for m in members),
        "images_per_s": None if None in rates else float(np.mean(rates)),
        "best_step": None,
        "best_val_accuracy": None,
        "members": len(members),
    }
    return make_results(
        classes=classes,
        label_set=first["label_set"],
        strategy=first["strategy"],
        train=train,
        splits=splits,
    )


# --------------------------------------------------------------------------- validation


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_split(split: Any, classes: list[str], where: str) -> list[str]:
    problems: list[str] = []
    if not isinstance(split, Mapping):
        return [f"{where} must be an object with 'metrics' and 'predictions'"]
    if not isinstance(split.get("metrics"), Mapping):
        problems.append(f"{where}.metrics is missing or not an object")
    preds = split.get("predictions")
    if not isinstance(preds, list):
        return [*problems, f"{where}.predictions is missing or not a list"]
    seen: set[str] = set()
    for i, p in enumerate(preds):
        at = f"{where}.predictions[{i}]"
        if not isinstance(p, Mapping):
            problems.append(f"{at} is not an object")
            continue
        missing = [k for k in PREDICTION_KEYS if k not in p]
        if missing:
            problems.append(f"{at} lacks {missing}")
            continue
        for k in ("series_id", "patient_id", "site", "label"):
            if not isinstance(p[k], str):
                problems.append(f"{at}.{k} must be a string, got {type(p[k]).__name__}")
        sid = p["series_id"]
        if isinstance(sid, str):
            if not sid:
                problems.append(f"{at}.series_id is empty")
            elif sid in seen:
                problems.append(f"{at}.series_id {sid!r} appears twice")
            seen.add(sid)
        if isinstance(p["label"], str) and p["label"] and p["label"] not in classes:
            problems.append(f"{at}.label {p['label']!r} is not one of {classes} (or '')")
        probs = p["probs"]
        if not isinstance(probs, list) or len(probs) != len(classes):
            n = len(probs) if isinstance(probs, list) else type(probs).__name__
            problems.append(f"{at}.probs has {n} values, expected {len(classes)} ({classes})")
        elif not all(_is_num(v) and math.isfinite(v) for v in probs):
            problems.append(f"{at}.probs holds a non-number, NaN or infinity")
        elif abs(sum(probs) - 1.0) > 1e-3 or min(probs) < -1e-6:
            problems.append(f"{at}.probs is not a distribution (sum {sum(probs):.4g})")
        if len(problems) > _MAX_REPORTED:
            break
    return problems


def validate_results(results: Any, *, source: str = "results") -> None:
    """Raise ResultsError listing what is wrong with a results dict (schema above)."""
    problems: list[str] = []
    if not isinstance(results, Mapping):
        raise ResultsError(f"{source}: expected a JSON object, got {type(results).__name__}")
    classes = results.get("classes")
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
    ):
        problems.append(
            f"classes must be a non-empty list of distinct phase codes, got {classes!r}"
        )
        classes = None
    label_set = results.get("label_set")
    if not isinstance(label_set, str) or not label_set:
        problems.append("label_set must be a non-empty string")
    elif classes and label_set in LABEL_SETS and list(LABEL_SETS[label_set].codes) != classes:
        problems.append(
            f"classes {classes} differ from label set {label_set!r} {list(LABEL_SETS[label_set].codes)}"
        )
    if not isinstance(results.get("strategy"), str) or not results.get("strategy"):
        problems.append("strategy must be a non-empty string (one_step | two_step)")
    train = results.get("train")
    if not isinstance(train, Mapping):
        problems.append("train must be an object with " + ", ".join(TRAIN_KEYS))
    else:
        for k in TRAIN_KEYS:
            if k not in train:
                problems.append(f"train.{k} is missing")
            elif train[k] is not None and not _is_num(train[k]):
                problems.append(f"train.{k} must be a number or null, got {train[k]!r}")
    splits = results.get("splits")
    if not isinstance(splits, Mapping):
        problems.append("splits must be an object {split name: {metrics, predictions}}")
    elif classes:
        for name, split in splits.items():
            problems += _check_split(split, classes, f"splits.{name}")
    if problems:
        raise ResultsError(_format(source, problems))


def _format(source: str, problems: list[str]) -> str:
    shown = problems[:_MAX_REPORTED]
    more = len(problems) - len(shown)
    lines = "\n".join(f"  - {p}" for p in shown)
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"{source}: invalid results ({len(problems)} problem(s)):\n{lines}{tail}"


# --------------------------------------------------------------------------- files


def results_path(run_dir_or_file: str | Path) -> Path:
    path = Path(run_dir_or_file)
    return path if path.suffix == ".json" else path / RESULTS_FILE


def write_results(run_dir_or_file: str | Path, results: Mapping[str, Any]) -> Path:
    """Validate and write results.json atomically (temp file + rename: a crash mid-write never
    leaves a truncated file that a resumed reproduce would mistake for a finished run)."""
    path = results_path(run_dir_or_file)
    data = jsonable(dict(results))
    validate_results(data, source=str(path))
    return atomic.write_json(path, data, indent=1)


def load_results(run_dir_or_file: str | Path) -> dict:
    """Read and validate a run's results.json (a run directory or the file itself)."""
    path = results_path(run_dir_or_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no results file (a training run writes {RESULTS_FILE} when it finishes; "
            "is the run complete?)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    validate_results(data, source=str(path))
    return data


# --------------------------------------------------------------------------- arrays


def predictions_arrays(
    split_dict: Mapping[str, Any], classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(y_true int64 [N] with -1 for unlabelled, probs float64 [N, K], patient_ids [N],
    sites [N], series_ids [N]) of one split, in the stored order."""
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    preds = split_dict["predictions"]
    y_true = np.array([index[p["label"]] if p["label"] else -1 for p in preds], dtype=np.int64)
    probs = np.array([p["probs"] for p in preds], dtype=np.float64).reshape(
        len(preds), len(classes)
    )
    patient_ids = np.array([p["patient_id"] for p in preds], dtype=str)
    sites = np.array([p["site"] for p in preds], dtype=str)
    series_ids = np.array([p["series_id"] for p in preds], dtype=str)
    return y_true, probs, patient_ids, sites, series_ids


def split_metrics(results: Mapping[str, Any], split: str) -> dict | None:
    """Stored metrics of a split (recomputed from predictions when absent or empty); None when
    the run has no such split."""
    s = results["splits"].get(split)
    if s is None:
        return None
    if s.get("metrics") and "accuracy" in s["metrics"]:
        return dict(s["metrics"])
    return split_results(s["predictions"], results["classes"])["metrics"]


def paired_comparison(
    results_a: Mapping[str, Any],
    results_b: Mapping[str, Any],
    split: str = "test",
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """compare_paired (exact McNemar, accuracy difference B - A) of two runs on one split,
    matched by series_id. The runs must cover the same labelled series with the same classes."""
    if list(results_a["classes"]) != list(results_b["classes"]):
        raise ValueError(
            f"runs use different classes: {results_a['classes']} vs {results_b['classes']}"
        )
    classes = results_a["classes"]
    for name, r in (("A", results_a), ("B", results_b)):
        if split not in r["splits"]:
            raise ValueError(f"run {name} has no split {split!r} (has {sorted(r['splits'])})")
    ya, pa, pid, _, sid_a = predictions_arrays(results_a["splits"][split], classes)
    yb, pb, _, _, sid_b = predictions_arrays(results_b["splits"][split], classes)
    la, lb = set(sid_a[ya >= 0].tolist()), set(sid_b[yb >= 0].tolist())
    if la != lb:
        raise ValueError(
            f"split {split!r}: the runs were evaluated on different series "
            f"({len(la - lb)} only in A, {len(lb - la)} only in B)"
        )
    order_b = {s: i for i, s in enumerate(sid_b.tolist())}
    keep = ya >= 0
    idx_b = np.array([order_b[s] for s in sid_a[keep]], dtype=np.int64)
    if np.any(yb[idx_b] != ya[keep]):
        raise ValueError(f"split {split!r}: the runs disagree on some series' labels")
    return compare_paired(
        ya[keep],
        pa[keep].argmax(1),
        pb[idx_b].argmax(1),
        pid[keep],
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
