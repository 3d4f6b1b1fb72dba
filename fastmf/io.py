"""Reading and writing rating files: delimited text (CSV/TSV/LIBMF), Matrix Market, Parquet.

Files are parsed by numpy's C reader (``np.loadtxt``), one column at a time,
so no Python object is built per row. When that fast path meets a bad line,
a line-by-line pass finds it, so the error names the file, the line and what
was wrong — or, with ``skip_bad_lines=True``, skips such lines and reports
how many.
"""

import os
import warnings
from collections import namedtuple

import numpy as np

__all__ = [
    "RawRatings",
    "read_matrix_market",
    "read_pairs",
    "read_ratings",
    "write_matrix_market",
    "write_ratings",
]

RawRatings = namedtuple("RawRatings", ["users", "items", "values", "timestamps"])
RawRatings.__doc__ = """Ratings with raw ids: ``fit(fastmf.Dataset(r.users, r.items, r.values))``.

``users`` and ``items`` are int64 when every id is an integer, else str;
``values`` float64; ``timestamps`` int64 or None.
"""

_SEPARATORS = ("::", "\t", ",", ";", "|")


class _BadLine(ValueError):
    pass


def _detect_separator(line):
    for sep in _SEPARATORS:
        if sep in line:
            return sep
    return None  # runs of whitespace (LIBMF's "user item value")


def _split(line, sep):
    return line.split() if sep is None else line.split(sep)


def _first_line_fields(path, sep):
    """Return the separator ("infer" resolved) and the stripped fields of the file's first line."""
    with open(path, encoding="utf-8") as handle:
        first = handle.readline().rstrip("\r\n")
    if not first.strip():
        raise ValueError(f"{path}: the file is empty.")
    if sep == "infer":
        sep = _detect_separator(first)
    return sep, [field.strip() for field in _split(first, sep)]


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_ratings(
    path, *, sep="infer", columns=(0, 1, 2), timestamp=None, header="infer", skip_bad_lines=False
):
    """Read (user, item, value) rows from a delimited text file.

    Parameters
    ----------
    path : str or path-like
        A delimited text file, or a ``.parquet`` file (needs pyarrow, the
        ``parquet`` extra; ``sep`` and ``header`` are then unused).
    sep : str, None or "infer", default="infer"
        Field separator; ``None`` means runs of whitespace (LIBMF's text
        format); "infer" picks the first of ``::``, tab, ``,``, ``;``, ``|``
        found in the first line, else whitespace.
    columns : three ints or three str, default=(0, 1, 2)
        Positions (0-based) or header names of the user, item and value columns.
    timestamp : int or str, optional
        Position or name of a timestamp column to read too.
    header : bool or "infer", default="infer"
        Whether the first line holds column names; "infer" says yes when its
        value field is not a number.
    skip_bad_lines : bool, default=False
        Skip lines with missing fields, a non-numeric or non-finite value
        (reported in a warning with their count) instead of raising.

    Returns
    -------
    RawRatings

    Raises
    ------
    ValueError
        Naming the file, the line and the problem: a missing column, a
        non-numeric value, NaN or infinity, an unknown column name, no rows.
    """
    path = os.fspath(path)
    if path.endswith(".parquet"):
        return _read_parquet(path, columns, timestamp)
    sep, names = _first_line_fields(path, sep)
    wanted = list(columns) + ([timestamp] if timestamp is not None else [])
    if len(columns) != 3:
        raise ValueError("columns must name three columns: user, item, value.")
    if header == "infer":
        value_field = wanted[2]
        header = isinstance(value_field, str) or (
            value_field < len(names) and not _is_number(names[value_field])
        )
    positions = []
    for column in wanted:
        if isinstance(column, str):
            if not header:
                raise ValueError(
                    f"{path}: column {column!r} given by name, but there is no header."
                )
            if column not in names:
                raise ValueError(f"{path}: no column named {column!r}; the header has {names}.")
            positions.append(names.index(column))
        else:
            positions.append(int(column))
    skip = 1 if header else 0
    try:
        fields = _read_fast(path, sep, positions, skip)
    except ValueError:
        fields, skipped = _read_slow(path, sep, positions, skip, skip_bad_lines)
        if skipped:
            warnings.warn(f"{path}: skipped {skipped} bad line(s).", stacklevel=2)
    users, items, values = fields[:3]
    if values.size == 0:
        raise ValueError(f"{path}: no rating rows found.")
    return RawRatings(users, items, values, fields[3] if timestamp is not None else None)


def _read_parquet(path, columns, timestamp):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"{path}: reading Parquet needs pyarrow: pip install 'fastmf[parquet]'."
        ) from None
    table = pq.read_table(path)
    names = table.column_names

    def column(spec):
        name = spec if isinstance(spec, str) else names[spec]
        if name not in names:
            raise ValueError(f"{path}: no column named {name!r}; the file has {names}.")
        return table.column(name).to_numpy()

    users, items = column(columns[0]), column(columns[1])
    values = column(columns[2]).astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{path}, row {int(np.flatnonzero(bad)[0]) + 1}: the value is not finite.")
    stamps = column(timestamp).astype(np.int64) if timestamp is not None else None
    users, items = (ids.astype(str) if ids.dtype == object else ids for ids in (users, items))
    return RawRatings(users, items, values, stamps)


_ID_HEADERS = {
    "user",
    "item",
    "users",
    "items",
    "user_id",
    "item_id",
    "userid",
    "itemid",
    "movie",
    "movieid",
    "movie_id",
    "u",
    "i",
}


def read_pairs(path, *, sep="infer", columns=(0, 1), header="infer"):
    """Read (user, item) pairs to score, e.g. for ``fastmf predict``.

    Parameters
    ----------
    path : str or path-like
        Delimited text; further columns are ignored.
    sep : str, None or "infer", default="infer"
        As in :func:`read_ratings`.
    columns : two ints or two str, default=(0, 1)
        Positions or header names of the user and item columns.
    header : bool or "infer", default="infer"
        "infer" says yes when the first line names a column ``user``, ``item``,
        ``userId``, ``movieId`` (or similar), since ids alone cannot tell.

    Returns
    -------
    users, items : ndarrays of int64 (all ids integers) or str
    """
    path = os.fspath(path)
    sep, names = _first_line_fields(path, sep)
    if header == "infer":
        header = any(isinstance(c, str) for c in columns) or bool(
            {name.lower() for name in names} & _ID_HEADERS
        )
    positions = []
    for column in columns:
        if isinstance(column, str):
            if not header or column not in names:
                raise ValueError(f"{path}: no column named {column!r} in the header {names}.")
            positions.append(names.index(column))
        else:
            positions.append(int(column))
    try:
        return tuple(_read_ids(path, sep, position, 1 if header else 0) for position in positions)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _loadtxt(path, sep, column, skip, dtype):
    delimiter = ":" if sep == "::" else sep
    if sep == "::":  # "a::b" splits on ":" into a, "", b: the fields sit at even positions
        column *= 2
    return np.loadtxt(
        path,
        delimiter=delimiter,
        usecols=(column,),
        skiprows=skip,
        dtype=dtype,
        comments=None,
        ndmin=1,
        encoding="utf-8",
    )


def _read_ids(path, sep, column, skip):
    try:
        return _loadtxt(path, sep, column, skip, np.int64)
    except ValueError:
        return np.char.strip(_loadtxt(path, sep, column, skip, str))


def _read_fast(path, sep, positions, skip):
    users = _read_ids(path, sep, positions[0], skip)
    items = _read_ids(path, sep, positions[1], skip)
    values = _loadtxt(path, sep, positions[2], skip, np.float64)
    if not np.isfinite(values).all():
        raise ValueError("non-finite value")  # located by the slow pass
    out = [users, items, values]
    if len(positions) > 3:
        out.append(_loadtxt(path, sep, positions[3], skip, np.int64))
    return out


def _read_slow(path, sep, positions, skip, skip_bad_lines):
    """Parse line by line (only after the fast path failed): find or skip bad lines."""
    rows, skipped = [], 0
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if number <= skip or not line.strip():
                continue
            try:
                rows.append(_parse_line(line.rstrip("\r\n"), sep, positions))
            except _BadLine as error:
                if not skip_bad_lines:
                    raise ValueError(f"{path}, line {number}: {error}") from None
                skipped += 1
    if not rows:
        raise ValueError(f"{path}: no valid rating rows ({skipped} bad line(s) skipped).")
    columns = list(zip(*rows))
    out = [_ids_array(columns[0]), _ids_array(columns[1]), np.array(columns[2], dtype=float)]
    if len(positions) > 3:
        out.append(np.array(columns[3], dtype=np.int64))
    return out, skipped


def _parse_line(line, sep, positions):
    parts = _split(line, sep)
    if max(positions) >= len(parts):
        raise _BadLine(
            f"expected at least {max(positions) + 1} fields, found {len(parts)}: {line!r}"
        )
    value_text = parts[positions[2]].strip()
    try:
        value = float(value_text)
    except ValueError:
        raise _BadLine(f"the value {value_text!r} is not a number") from None
    if not np.isfinite(value):
        raise _BadLine(f"the value is {value_text} (NaN and infinity are not ratings)")
    out = [parts[positions[0]].strip(), parts[positions[1]].strip(), value]
    if len(positions) > 3:
        stamp = parts[positions[3]].strip()
        if not stamp.lstrip("-").isdigit():
            raise _BadLine(f"the timestamp {stamp!r} is not an integer")
        out.append(int(stamp))
    return out


def _ids_array(ids):
    try:
        return np.array([int(x) for x in ids], dtype=np.int64)
    except ValueError:
        return np.array(ids, dtype=str)


def write_ratings(path, users, items, values, *, sep=",", header=("user", "item", "rating")):
    """Write ratings as delimited text; ``sep=" ", header=None`` writes LIBMF's text format.

    A path ending in ``.parquet`` writes Parquet instead (needs pyarrow; the
    column names come from ``header``).

    Parameters
    ----------
    path : str or path-like
    users, items : array_like of int or str
    values : array_like of float
    sep : str, default=","
    header : tuple of three str or None, default=("user", "item", "rating")
    """
    users, items, values = np.asarray(users), np.asarray(items), np.asarray(values)
    if not users.size == items.size == values.size:
        raise ValueError("users, items and values must have the same length.")
    if os.fspath(path).endswith(".parquet"):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(
                "writing Parquet needs pyarrow: pip install 'fastmf[parquet]'."
            ) from None
        names = header or ("user", "item", "rating")
        pq.write_table(pa.table(dict(zip(names, (users, items, values)))), path)
        return
    with open(path, "w", encoding="utf-8") as handle:
        if header:
            handle.write(sep.join(header) + "\n")
        for user, item, value in zip(users.tolist(), items.tolist(), values.tolist()):
            handle.write(f"{user}{sep}{item}{sep}{value:g}\n")


def read_matrix_market(path):
    """Read a Matrix Market file as a scipy.sparse COO array (explicit entries = observations)."""
    import scipy.io
    import scipy.sparse as sp

    return sp.coo_array(scipy.io.mmread(path))


def write_matrix_market(path, matrix):
    """Write a sparse matrix (or dense array) to a Matrix Market file."""
    import scipy.io

    scipy.io.mmwrite(path, matrix)
