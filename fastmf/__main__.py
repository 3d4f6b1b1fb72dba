"""Command line: ``python -m fastmf demo``."""

import argparse
import sys
import time
import warnings

import numpy as np

from . import BinaryMF, ImplicitMF, RealValueMF, __version__, show_config
from .datasets import make_interactions, make_synthetic
from .metrics import log_loss, precision_at_k, rmse, roc_auc
from .model_selection import train_test_split


def demo(n_users=50_000, n_items=5_000, n_ratings=1_000_000, k=32, seed=0, out=None):
    """Train the three models on generated data and print what they learned."""
    out = sys.stdout if out is None else out

    def say(text=""):
        print(text, file=out, flush=True)

    say(f"fastmf {__version__} demo")
    start = time.perf_counter()
    data = make_synthetic(n_users, n_items, n_ratings, random_state=seed)
    rng = np.random.default_rng(seed)
    is_test = rng.random(n_ratings) < 0.1
    train = (data.rows[~is_test], data.cols[~is_test], data.values[~is_test])
    test_rows, test_cols, test_values = data.rows[is_test], data.cols[is_test], data.values[is_test]
    say(
        f"generated {n_ratings:,} ratings (1-5 stars) of {n_users:,} users x {n_items:,} items "
        f"in {time.perf_counter() - start:.1f} s; training on {train[0].size:,}, "
        f"holding out {test_values.size:,}"
    )

    start = time.perf_counter()
    RealValueMF(k=2, biases=True, n_epochs=1, tol=None, random_state=0).fit(np.eye(2))
    BinaryMF(k=2, n_epochs=1, tol=None, random_state=0).fit(np.diag([1, -1]))
    say(f"numba kernels ready in {time.perf_counter() - start:.1f} s (compiled once, then cached)")

    say("\n== RealValueMF: squared loss on the star ratings, with mean and user/item biases")
    model = RealValueMF(k=k, biases=True, n_epochs=100, tol=None, random_state=seed, verbose=1)
    start = time.perf_counter()
    model.fit(train, shape=data.shape)
    seconds = time.perf_counter() - start
    predicted = np.clip(model.predict(test_rows, test_cols), 1, 5)
    say(
        f"{model.n_iter_} epochs in {seconds:.1f} s: "
        f"{train[0].size * model.n_iter_ / seconds / 1e6:.1f}M ratings/s (the whole fit)"
    )
    mean_only = rmse(test_values, np.full_like(test_values, train[2].mean()))
    say(
        f"held-out RMSE {rmse(test_values, predicted):.4f}   "
        f"(predicting the training mean: {mean_only:.4f})"
    )

    say("\n== BinaryMF: logistic loss on liked (>= 4 stars -> +1) vs not (-> -1)")
    labels = np.where(train[2] >= 4, 1.0, -1.0).astype(np.float32)
    test_labels = np.where(test_values >= 4, 1, -1)
    binary = BinaryMF(k=k, n_epochs=100, tol=None, random_state=seed, verbose=1)
    start = time.perf_counter()
    binary.fit((train[0], train[1], labels), shape=data.shape)
    seconds = time.perf_counter() - start
    proba = binary.predict_proba(test_rows, test_cols)
    base_rate = np.full(test_labels.shape, (labels > 0).mean())
    say(
        f"{binary.n_iter_} epochs in {seconds:.1f} s: "
        f"{labels.size * binary.n_iter_ / seconds / 1e6:.1f}M ratings/s (the whole fit)"
    )
    say(
        f"held-out log loss {log_loss(test_labels, proba):.4f}   "
        f"(predicting the base rate: {log_loss(test_labels, base_rate):.4f})"
    )
    say(f"held-out AUC      {roc_auc(test_labels, proba):.4f}   (chance: 0.5)")

    say("\n== ImplicitMF: positive-only interactions (generated clicks with group taste)")
    clicks = make_interactions(n_users, n_items, n_ratings // 2, random_state=seed)
    train_clicks, held_out = train_test_split(
        clicks[:3], test_size=0.2, by="user", shape=clicks.shape, random_state=seed
    )
    implicit = ImplicitMF(k=k, random_state=seed, verbose=1)
    start = time.perf_counter()
    implicit.fit(train_clicks, shape=clicks.shape)
    seconds = time.perf_counter() - start
    say(
        f"{implicit.n_iter_} epochs in {seconds:.1f} s on {train_clicks[0].size:,} interactions "
        f"({implicit.n_negatives} sampled negatives each per epoch)"
    )
    users = np.unique(held_out[0])[:2000]
    sample = tuple(a[np.isin(held_out[0], users)] for a in held_out)
    counts = np.bincount(train_clicks[1], minlength=n_items).astype(np.float64)
    popular = []
    for user in users:
        scores = counts.copy()
        scores[train_clicks[1][train_clicks[0] == user]] = -1.0
        top = np.argsort(-scores, kind="stable")[:10]
        popular.append(np.isin(top, sample[1][sample[0] == user]).mean())
    say(
        f"held-out precision@10 {precision_at_k(implicit, sample, k=10):.4f} over "
        f"{users.size:,} users   (the most popular unseen items: {np.mean(popular):.4f})"
    )

    say("\n== Most similar items (cosine of RealValueMF item factors)")
    popular = np.argsort(-np.bincount(train[1], minlength=n_items), kind="stable")[:3]
    for item in popular:
        ids, scores = model.similar_items(int(item), n=5)
        pairs = ", ".join(f"{i} ({s:.2f})" for i, s in zip(ids, scores))
        say(f"item {item}: {pairs}")
    return model, binary, implicit


def main(argv=None):
    """Entry point of ``python -m fastmf`` and the ``fastmf`` command.

    Exit status: 0 on success, 2 on a usage error (argparse), 1 on any other
    error, reported in one line (with the traceback under ``--debug``).
    """
    from . import _cli

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="fastmf", description="Fast matrix factorization.")
    parser.add_argument("--version", action="version", version=f"fastmf {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo",
        help="train both models on generated ratings and print what they learned",
        description="Generate a seeded synthetic rating set, hold out 10%%, fit RealValueMF "
        "and BinaryMF; generate interactions, hold out 20%% per user, fit ImplicitMF; print "
        "held-out metrics, throughput and similar items.",
        epilog="example:\n  fastmf demo --ratings 200000",
        formatter_class=formatter,
    )
    demo_parser.add_argument("--ratings", type=int, default=1_000_000, help="number of ratings")
    demo_parser.add_argument("--users", type=int, default=50_000)
    demo_parser.add_argument("--items", type=int, default=5_000)
    demo_parser.add_argument("-k", type=int, default=32, help="number of latent factors")
    demo_parser.add_argument("--seed", type=int, default=0)
    commands.add_parser(
        "info",
        help="print versions, threading layer, compile cache and CPU (for bug reports)",
        description="Print what a bug report needs: versions, threading layer and its safety, "
        "thread count, compile cache folder, CPU and SIMD width.",
    )
    _cli.add_commands(commands, formatter)
    args = parser.parse_args(argv)

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"fastmf {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():  # restored on return: main() may run inside a program
            warnings.showwarning = one_line
            if args.command == "demo":
                demo(args.users, args.items, args.ratings, args.k, args.seed)
            elif args.command == "info":
                show_config()
            else:
                _cli.run(args)
    except Exception as error:  # one line for users; the traceback with --debug
        if args.debug:
            raise
        print(f"fastmf {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
