"""Reading and writing rating files: delimited text (CSV/TSV/LIBMF), Matrix Market, Parquet.

Files are parsed by numpy's C reader (``np.loadtxt``), one column at a time,
so no Python object is built per row. When that fast path meets a bad line,
a line-by-line pass finds it, so the error names the file, the line and what
was wrong — or, with ``skip_bad_lines=True``, skips such lines and reports
how many.
"""

import functools
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
# UTF-8, with or without a byte-order mark (which would otherwise stay in the first name).
_ENCODING = "utf-8-sig"


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
    with open(path, encoding=_ENCODING) as handle:
        first = handle.readline().rstrip("\r\n")
    if not first.strip():
        raise ValueError(f"{path}: the file is empty.")
    if sep == "infer":
        sep = _detect_separator(first)
    return sep, [_unquote(field) for field in _split(first, sep)]


def count_fields(path, sep="infer"):
    """Return the number of fields on the first line of a delimited text file."""
    return len(_first_line_fields(os.fspath(path), sep)[1])


def _unquote(field):
    """Strip blanks and one pair of surrounding double quotes (CSV quoting)."""
    field = field.strip()
    if len(field) >= 2 and field[0] == field[-1] == '"':
        field = field[1:-1].strip()
    return field


def _decoding_errors(function):
    """Name the file when it is not UTF-8 text (the codec's message names none)."""

    @functools.wraps(function)
    def read(path, *args, **kwargs):
        try:
            return function(path, *args, **kwargs)
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{os.fspath(path)}: not UTF-8 text (byte {error.object[error.start]:#04x} at "
                f"offset {error.start}). Re-save the file as UTF-8, e.g. with "
                "`iconv -f latin1 -t utf-8`."
            ) from None

    return read


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


@_decoding_errors
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
    "uid",
    "iid",
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


@_decoding_errors
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
        header = (
            any(isinstance(c, str) for c in columns)
            or bool({name.lower() for name in names} & _ID_HEADERS)
            or _names_over_integers(path, sep, names, columns)
        )
    positions = []
    for column in columns:
        if isinstance(column, str):
            if not header or column not in names:
                raise ValueError(f"{path}: no column named {column!r} in the header {names}.")
            positions.append(names.index(column))
        else:
            positions.append(int(column))
    skip = 1 if header else 0
    try:
        return tuple(_read_ids(path, sep, position, skip) for position in positions)
    except ValueError:
        _locate_bad_pair(path, sep, positions, skip)
        raise


def _names_over_integers(path, sep, names, columns):
    """Whether the first line looks like names over integer ids (e.g. "uid,iid" then "1,2")."""
    positions = [c for c in columns if isinstance(c, int)]
    with open(path, encoding=_ENCODING) as handle:
        handle.readline()
        second = handle.readline().rstrip("\r\n")
    fields = [_unquote(field) for field in _split(second, sep)]
    if not second.strip() or any(p >= len(fields) or p >= len(names) for p in positions):
        return False

    def integer(text):
        return text.lstrip("-").isdigit()

    return all(integer(fields[p]) and not integer(names[p]) for p in positions)


def _locate_bad_pair(path, sep, positions, skip):
    """Raise a ValueError naming the first line whose id fields are missing or empty."""
    with open(path, encoding=_ENCODING) as handle:
        for number, line in enumerate(handle, start=1):
            if number <= skip or not line.strip():
                continue
            parts = _split(line.rstrip("\r\n"), sep)
            if max(positions) >= len(parts):
                raise ValueError(
                    f"{path}, line {number}: expected at least {max(positions) + 1} fields, "
                    f"found {len(parts)}: {line.rstrip()!r}"
                )
            if any(not _unquote(parts[p]) for p in positions):
                raise ValueError(f"{path}, line {number}: an id is empty: {line.rstrip()!r}")
    raise ValueError(f"{path}: could not read the id columns {positions}.")


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
        encoding=_ENCODING,
    )


def _read_ids(path, sep, column, skip):
    try:
        return _loadtxt(path, sep, column, skip, np.int64)
    except ValueError:
        texts = _loadtxt(path, sep, column, skip, str)
    texts = np.char.strip(texts)
    if texts.size and np.char.startswith(texts, '"').any():  # CSV quoting
        texts = np.char.strip(np.char.strip(texts, '"'))
    ids = _ids_array(texts)
    if ids.dtype.kind == "U" and (ids == "").any():
        raise ValueError("empty id")  # located line by line
    return ids


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
    with open(path, encoding=_ENCODING) as handle:
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
    value_text = _unquote(parts[positions[2]])
    for name, position in (("user", positions[0]), ("item", positions[1])):
        if not _unquote(parts[position]):
            raise _BadLine(f"the {name} id is empty: {line!r}")
    try:
        value = float(value_text)
    except ValueError:
        raise _BadLine(f"the value {value_text!r} is not a number") from None
    if not np.isfinite(value):
        raise _BadLine(f"the value is {value_text} (NaN and infinity are not ratings)")
    out = [_unquote(parts[positions[0]]), _unquote(parts[positions[1]]), value]
    if len(positions) > 3:
        stamp = parts[positions[3]].strip()
        if not stamp.lstrip("-").isdigit():
            raise _BadLine(f"the timestamp {stamp!r} is not an integer")
        out.append(int(stamp))
    return out


def _ids_array(ids):
    """Integer ids when every id is an integer, also when written as "196.0"; else strings.

    ``ids``: stripped id texts (a sequence or a str array); parsed by numpy, not per id.
    """
    texts = np.asarray(ids, dtype=str)
    try:
        return texts.astype(np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        numbers = texts.astype(np.float64)
    except ValueError:
        return texts
    if np.isfinite(numbers).all() and (numbers == np.round(numbers)).all():
        if np.abs(numbers).max(initial=0) < 2.0**53:  # exactly representable
            return numbers.astype(np.int64)
    return texts


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
