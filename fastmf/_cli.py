"""The ``fastmf`` subcommands other than ``demo``: fit, predict, recommend, similar, evaluate.

Each reads files, calls the public API, and writes CSV or JSON lines.
"""

import argparse
import contextlib
import json
import os
import sys

import numpy as np
from scipy.special import expit

from . import BinaryMF, Dataset, ImplicitMF, RealValueMF, load
from ._validation import repeated_pairs
from .io import RawRatings, count_fields, read_pairs, read_ratings
from .metrics import (
    log_loss,
    mae,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    rmse,
    roc_auc,
)
from .model_selection import train_test_split

EXAMPLES = {
    "fit": "example:\n  fastmf fit ratings.csv --loss squared -k 32 --epochs 50 --val 0.1 "
    "--save model.npz\n  fastmf fit clicks.csv --loss implicit-logistic --val 0.2 --save model.npz"
    "   # user,item[,weight] lines",
    "predict": "example:\n  fastmf predict model.npz pairs.csv --unknown mean > scores.csv",
    "recommend": "example:\n  fastmf recommend model.npz --users 196 186 -n 10 > recs.csv",
    "similar": "example:\n  fastmf similar model.npz --items 242 302 -n 10",
    "evaluate": "example:\n  fastmf evaluate model.npz test.csv -k 10",
}
# The model each --loss trains, and ImplicitMF's loss= for the implicit ones.
_MODEL_FOR_LOSS = {model_class._loss.name: model_class for model_class in (RealValueMF, BinaryMF)}
_IMPLICIT_LOSS = {}
for _name in ("logistic", "bpr"):
    _loss = ImplicitMF(loss=_name)._loss
    _MODEL_FOR_LOSS[_loss.name] = ImplicitMF
    _IMPLICIT_LOSS[_loss.name] = _name


def add_commands(commands, formatter):
    """Register the subcommands on an argparse subparsers object."""
    fit = commands.add_parser(
        "fit",
        help="train a model on a ratings file",
        epilog=EXAMPLES["fit"],
        formatter_class=formatter,
    )
    _add_data_options(fit)
    fit.add_argument(
        "--loss",
        choices=tuple(_MODEL_FOR_LOSS),
        default=RealValueMF._loss.name,
        help="squared: ratings; logistic: +-1 responses; bpr, implicit-logistic: positive-only "
        "interactions (a user and an item per line, an optional weight column)",
    )
    fit.add_argument("-k", type=int, default=32, help="number of latent factors")
    fit.add_argument(
        "--epochs", type=int, help="maximum epochs (default 100; 30 for the implicit losses)"
    )
    fit.add_argument("--lr", type=float, help="learning rate (model default if omitted)")
    fit.add_argument("--l2", type=float, help="L2 weight (model default if omitted)")
    fit.add_argument("--adagrad", action="store_true", help="AdaGrad learning rate")
    fit.add_argument(
        "--biases",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="learn user and item biases (default); --no-biases for the plain p.q model",
    )
    fit.add_argument(
        "--threshold", type=float, help="logistic loss: ratings >= threshold are +1, others -1"
    )
    fit.add_argument(
        "--val", type=float, default=0.0, help="fraction held out for validation and early stopping"
    )
    fit.add_argument(
        "--negatives", type=int, help="bpr, implicit-logistic: negatives per interaction"
    )
    fit.add_argument("--threads", type=int, default=0, help="0 = all cores")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument(
        "--duplicates",
        choices=("raise", "sum", "last"),
        default="raise",
        help="a (user, item) pair rated more than once: fail (default), add the values, or "
        "keep the last one in the file",
    )
    fit.add_argument("--save", required=True, help="where to write the model (.npz)")
    fit.add_argument("--plot", help="write the training curves to this PNG (needs matplotlib)")
    fit.add_argument("--quiet", action="store_true", help="no per-epoch progress")

    predict = commands.add_parser(
        "predict",
        help="score (user, item) pairs",
        epilog=EXAMPLES["predict"],
        formatter_class=formatter,
    )
    predict.add_argument("model")
    predict.add_argument("pairs", help="file with user and item columns")
    predict.add_argument("--sep", default="infer", help="field separator (default: detect)")
    predict.add_argument(
        "--columns",
        nargs=2,
        metavar=("USER", "ITEM"),
        help="column positions (0-based) or header names",
    )
    predict.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the first line names the columns (default: detect)",
    )
    predict.add_argument("--unknown", choices=("raise", "nan", "mean"), default="raise")
    _add_format(predict)

    recommend = commands.add_parser(
        "recommend",
        help="top-n items for users",
        epilog=EXAMPLES["recommend"],
        formatter_class=formatter,
    )
    recommend.add_argument("model")
    recommend.add_argument("--users", nargs="+", required=True, help="raw user ids")
    recommend.add_argument("-n", type=int, default=10)
    recommend.add_argument(
        "--include-seen",
        action="store_true",
        help="also recommend items the user rated in training",
    )
    _add_format(recommend)

    similar = commands.add_parser(
        "similar",
        help="most similar items (or users)",
        epilog=EXAMPLES["similar"],
        formatter_class=formatter,
    )
    similar.add_argument("model")
    group = similar.add_mutually_exclusive_group(required=True)
    group.add_argument("--items", nargs="+", help="raw item ids")
    group.add_argument("--users", nargs="+", help="raw user ids")
    similar.add_argument("-n", type=int, default=10)
    _add_format(similar)

    evaluate = commands.add_parser(
        "evaluate",
        help="metrics on a held-out ratings file",
        epilog=EXAMPLES["evaluate"],
        formatter_class=formatter,
    )
    evaluate.add_argument("model")
    _add_data_options(evaluate)
    evaluate.add_argument("-k", type=int, default=10, help="cut-off of the ranking metrics")
    evaluate.add_argument(
        "--threshold", type=float, help="relevant / positive when the value >= threshold"
    )
    _add_format(evaluate)


def _add_data_options(parser):
    parser.add_argument(
        "data", help="ratings file: user, item, value columns (value optional for interactions)"
    )
    parser.add_argument("--sep", default="infer", help="field separator (default: detect)")
    parser.add_argument(
        "--columns",
        nargs="+",
        metavar="COLUMN",
        help="USER ITEM VALUE column positions (0-based) or header names; USER ITEM alone "
        "for interactions without values",
    )
    parser.add_argument("--skip-bad-lines", action="store_true")


def _add_format(parser):
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")


def _columns(args):
    if args.columns is None:
        return (0, 1, 2)
    if len(args.columns) not in (2, 3):
        raise ValueError(
            f"--columns takes USER ITEM VALUE (or USER ITEM), got {len(args.columns)} names."
        )
    return tuple(int(c) if c.isdigit() else c for c in args.columns)


def _read(args, values_optional=False):
    """Read the data file; interactions may come without a value column (weights 1)."""
    columns = _columns(args)
    if values_optional and (
        len(columns) == 2 or (args.columns is None and count_fields(args.data, args.sep) == 2)
    ):
        users, items = read_pairs(args.data, sep=args.sep, columns=columns[:2])
        return RawRatings(users, items, np.ones(users.size, dtype=np.float32), None)
    if len(columns) == 2:
        raise ValueError(
            "--columns USER ITEM (no value column) is for --loss bpr or implicit-logistic; "
            "give USER ITEM VALUE."
        )
    return read_ratings(
        args.data, sep=args.sep, columns=columns, skip_bad_lines=args.skip_bad_lines
    )


def _emit(rows, header, fmt, out):
    if fmt == "jsonl":
        for row in rows:
            # NaN (an unknown pair) is not JSON: written as null.
            record = {name: _plain(value) for name, value in zip(header, row)}
            out.write(json.dumps(record, allow_nan=False) + "\n")
    else:
        out.write(",".join(header) + "\n")
        for row in rows:
            cells = (_plain(v) for v in row)
            out.write(",".join("" if v is None else str(v) for v in cells) + "\n")


def _plain(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _raw_ids(id_map, given):
    """Command-line ids are strings; match the map's type (int ids parse as int)."""
    if id_map.ids_.dtype.kind in "iu":
        try:
            return np.array([int(x) for x in given], dtype=np.int64)
        except ValueError:
            raise ValueError(f"this model's ids are integers; got {given}") from None
    return np.array(given, dtype=str)


def _check_output_path(path, option):
    """Fail before training when ``path`` cannot be written (a typo must not cost a fit)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {path}: the folder {folder} does not exist.")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a folder; give a file name.")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{option} {path}: not writable.")


def _labels(args, values):
    """Return the ±1 labels of a logistic fit: from --threshold, or values already ±1 / 0-1."""
    if args.threshold is None:
        distinct = np.unique(values)
        if set(distinct.tolist()) <= {-1.0, 1.0} or set(distinct.tolist()) <= {0.0, 1.0}:
            return np.where(values > 0, 1.0, -1.0)
        raise ValueError(
            f"{args.data}: --loss logistic needs labels, and the values are "
            f"{_few(distinct)}. Pass --threshold T to make values >= T positive "
            "(e.g. --threshold 4 for 1-5 stars)."
        )
    labels = np.where(values >= args.threshold, 1.0, -1.0)
    positives = int((labels > 0).sum())
    if positives in (0, labels.size):
        kind = "negative" if positives == 0 else "positive"
        raise ValueError(
            f"--threshold {args.threshold:g} makes every one of the {labels.size} labels "
            f"{kind} (values range from {values.min():g} to {values.max():g}); choose a "
            "threshold inside that range."
        )
    return labels


def _few(values, limit=5):
    shown = ", ".join(f"{v:g}" for v in values[:limit].tolist())
    return f"{shown}, ..." if values.size > limit else shown


def _known(id_map, ids, what):
    """Return ``ids`` if the model knows them all, else fail naming the unknown ones."""
    unknown = ids[id_map.to_index(ids, unknown="missing") < 0]
    if unknown.size:
        raise ValueError(
            f"no {what} {', '.join(map(str, unknown.tolist()))} in the training data of this model."
        )
    return ids


def run_fit(args, out):
    model_class = _MODEL_FOR_LOSS[args.loss]
    implicit = model_class is ImplicitMF
    if args.threshold is not None and model_class is not BinaryMF:
        raise ValueError("--threshold applies to --loss logistic only (it makes ±1 labels).")
    if args.negatives is not None and not implicit:
        raise ValueError("--negatives applies to --loss bpr and implicit-logistic only.")
    if not 0 <= args.val < 1:
        raise ValueError(f"--val must be a fraction in [0, 1), got {args.val:g}.")
    _check_output_path(args.save, "--save")
    if args.plot:
        _check_output_path(args.plot, "--plot")
        _matplotlib()
    raw = _read(args, values_optional=implicit)
    values = raw.values
    if model_class is BinaryMF:
        values = _labels(args, values)
    params = dict(
        k=args.k,
        random_state=args.seed,
        biases=args.biases,
        n_threads=args.threads,
        verbose=0 if args.quiet else 1,
    )
    if args.lr is not None:
        params["lr"] = args.lr
    if args.l2 is not None:
        params["l2"] = args.l2
    if args.epochs is not None:
        params["n_epochs"] = args.epochs
    elif not implicit:
        params["n_epochs"] = 100
    if args.adagrad:
        params["learning_rate"] = "adagrad"
    if implicit:
        params["loss"] = _IMPLICIT_LOSS[args.loss]
        if args.negatives is not None:
            params["n_negatives"] = args.negatives
    model = model_class(**params)
    data = Dataset(raw.users, raw.items, values)
    if args.duplicates == "raise":
        _check_no_duplicates(args, raw, data)
    X_val = None
    train = data
    if args.val:
        # Interactions: a share of every user's, so that each is ranked on its own.
        by = "user" if implicit else "entry"
        train_part, val_part = train_test_split(
            data.triplets, test_size=args.val, by=by, shape=data.shape, random_state=args.seed
        )
        train = Dataset(
            data.user_map.to_raw(train_part[0]),
            data.item_map.to_raw(train_part[1]),
            train_part[2],
            user_map=data.user_map,
            item_map=data.item_map,
        )
        X_val = val_part
    # Progress goes to stderr: stdout carries the results.
    with contextlib.redirect_stdout(sys.stderr):
        model.fit(train, X_val=X_val, duplicates=args.duplicates)
    model.save(args.save)
    summary = {"epochs": model.n_iter_, "objective": float(model.loss_curve_[-1])}
    if X_val is not None:
        summary["best_epoch"] = model.best_epoch_
        metric = model._loss.metric_name.lower().replace(" ", "_")
        best = model.val_curve_.max() if implicit else model.val_curve_.min()
        summary[f"val_{metric}"] = float(best)
    if args.plot:
        _plot(model, args.plot)
    out.write(
        " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())
        + f" saved={args.save}\n"
    )


def _check_no_duplicates(args, raw, data):
    """Name a repeated (user, item) pair by its raw ids, and the option that resolves it."""
    count, first, second = repeated_pairs(data.rows, data.cols, data.shape[1])
    if count:
        raise ValueError(
            f"{args.data}: user {raw.users[first]!s} rated item {raw.items[first]!s} more than "
            f"once (rows {first + 1} and {second + 1} of the data; {count} repeated "
            "pair(s) in all). Pass --duplicates sum or --duplicates last, or remove them."
        )


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from None
    return plt


def _plot(model, path):
    plt = _matplotlib()
    figure, axis = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, model.n_iter_ + 1)
    axis.plot(epochs, model.loss_curve_, label="training objective")
    if model.val_curve_ is not None:
        axis.plot(epochs, model.val_curve_, label=f"validation {model._loss.metric_name}")
    axis.set_xlabel("epoch")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)


def run_predict(args, out):
    model = load(args.model)
    columns = (
        (0, 1)
        if args.columns is None
        else tuple(int(c) if c.isdigit() else c for c in args.columns)
    )
    header = "infer" if args.header is None else args.header
    users, items = read_pairs(args.pairs, sep=args.sep, columns=columns, header=header)
    score = model.predict_proba if isinstance(model, BinaryMF) else model.predict
    try:
        scores = score(users, items, unknown=args.unknown)
    except ValueError as error:
        if args.unknown != "raise":
            raise
        message = str(error).split(" Pass unknown=")[0]
        raise ValueError(
            f"{args.pairs}: {message} Pass --unknown nan or --unknown mean to score them anyway."
        ) from None
    _emit(
        zip(users.tolist(), items.tolist(), scores.tolist()),
        ("user", "item", "score"),
        args.format,
        out,
    )


def run_recommend(args, out):
    model = load(args.model)
    users = _known(model.user_map_, _raw_ids(model.user_map_, args.users), "user")
    ids, scores = model.recommend(users, n=args.n, exclude_seen=not args.include_seen)
    if isinstance(model, BinaryMF):  # probabilities, as `predict` prints
        scores = expit(scores)
    rows = []
    for user, user_ids, user_scores in zip(users.tolist(), ids, scores):
        for rank, (item, score) in enumerate(zip(user_ids.tolist(), user_scores), start=1):
            if np.isfinite(score):  # -inf marks padding
                rows.append((user, rank, item, score))
    _emit(rows, ("user", "rank", "item", "score"), args.format, out)


def run_similar(args, out):
    model = load(args.model)
    if args.items is not None:
        id_map, given, method, what = model.item_map_, args.items, model.similar_items, "item"
    else:
        id_map, given, method, what = model.user_map_, args.users, model.similar_users, "user"
    query = _known(id_map, _raw_ids(id_map, given), what)
    ids, scores = method(query, n=args.n)
    rows = [
        (q, rank, j, s)
        for q, row_ids, row_scores in zip(query.tolist(), ids, scores)
        for rank, (j, s) in enumerate(zip(row_ids.tolist(), row_scores), start=1)
    ]
    _emit(rows, (what, "rank", "similar", "score"), args.format, out)


def run_evaluate(args, out):
    model = load(args.model)
    implicit = isinstance(model, ImplicitMF)
    raw = _read(args, values_optional=implicit)
    rows = model.user_map_.to_index(raw.users, unknown="missing")
    cols = model.item_map_.to_index(raw.items, unknown="missing")
    known = (rows >= 0) & (cols >= 0)
    if not known.any():
        raise ValueError(f"{args.data}: no rating has a user and an item seen in training.")
    test = (rows[known], cols[known], raw.values[known])
    results = {"ratings": int(known.sum()), "skipped_unknown": int((~known).sum())}
    scores = model.decision_function(raw.users[known], raw.items[known])  # raw ids
    if implicit:  # every held-out interaction is relevant
        relevant = None
        if args.threshold is not None:
            raise ValueError("--threshold does not apply to an implicit-feedback model.")
    elif isinstance(model, RealValueMF):
        results.update(rmse=rmse(test[2], scores), mae=mae(test[2], scores))
        relevant = args.threshold
    else:
        labels = test[2] if args.threshold is None else np.where(test[2] >= args.threshold, 1, -1)
        proba = 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))
        results.update(log_loss=log_loss(labels, proba), auc=roc_auc(labels, scores))
        test = (test[0], test[1], labels)
        relevant = 1
    for name, metric in (
        ("precision", precision_at_k),
        ("recall", recall_at_k),
        ("ndcg", ndcg_at_k),
        *((("map", map_at_k),) if implicit else ()),
    ):
        ranked = (raw.users[known], raw.items[known], test[2])  # raw ids, as the model takes
        results[f"{name}@{args.k}"] = metric(model, ranked, k=args.k, threshold=relevant)
    _emit([tuple(results.values())], tuple(results), args.format, out)


RUNNERS = {
    "fit": run_fit,
    "predict": run_predict,
    "recommend": run_recommend,
    "similar": run_similar,
    "evaluate": run_evaluate,
}


def run(args):
    """Run a parsed subcommand, writing its output to stdout."""
    RUNNERS[args.command](args, sys.stdout)
