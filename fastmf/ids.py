"""Raw user and item ids (ints or strings) <-> the 0-based indices the models use."""

import numpy as np

__all__ = ["Dataset", "IdMap"]


def _as_id_array(ids, name):
    array = np.asarray(ids)  # pandas Series and Index work too (pandas is optional)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {array.shape}.")
    if array.dtype == object:
        kinds = {type(x) for x in array.tolist()}
        if kinds <= {str}:
            array = array.astype(str)
        elif all(issubclass(kind, (int, np.integer)) for kind in kinds):
            try:
                array = array.astype(np.int64)
            except OverflowError:
                raise ValueError(
                    f"{name} must fit in int64 (-2**63 .. 2**63 - 1); pass larger ids as strings."
                ) from None
        else:
            found = sorted(kind.__name__ for kind in kinds)
            raise TypeError(f"{name} must hold only integers or only strings; found {found}.")
    if array.dtype.kind not in "iuU":
        raise TypeError(f"{name} must hold integers or strings; got dtype {array.dtype}.")
    return array


class IdMap:
    """A fixed, sorted vocabulary of raw ids and their indices 0..n-1.

    Parameters
    ----------
    ids : array_like of int or str
        Raw ids (numpy array, list, or pandas column); duplicates are fine.

    Attributes
    ----------
    ids_ : ndarray
        The distinct raw ids, sorted; ``ids_[index]`` is the raw id of ``index``.
    """

    def __init__(self, ids):
        self.ids_ = np.unique(_as_id_array(ids, "ids"))

    @classmethod
    def from_sorted_unique(cls, ids):
        """Rebuild a map from its ``ids_`` (as saved with a model)."""
        ids = _as_id_array(ids, "ids")
        if ids.size > 1 and not (ids[1:] > ids[:-1]).all():
            raise ValueError("ids must be sorted and distinct.")
        instance = cls.__new__(cls)
        instance.ids_ = ids
        return instance

    def __len__(self):
        return int(self.ids_.size)

    def __repr__(self):
        return f"IdMap({len(self)} ids)"

    def to_index(self, raw, unknown="raise"):
        """Map raw ids to indices.

        Parameters
        ----------
        raw : array_like of int or str
        unknown : {"raise", "missing"}, default="raise"
            ``"raise"`` fails on an id not in the map, naming it; ``"missing"``
            returns -1 for it.

        Returns
        -------
        ndarray of int64, the shape of ``raw``
        """
        raw = np.asarray(raw)
        flat = _as_id_array(raw.ravel(), "raw ids")
        if (flat.dtype.kind == "U") != (self.ids_.dtype.kind == "U") and flat.size:
            raise TypeError(
                f"These ids are {'strings' if flat.dtype.kind == 'U' else 'integers'} but the "
                f"map holds {'strings' if self.ids_.dtype.kind == 'U' else 'integers'}."
            )
        position = np.searchsorted(self.ids_, flat)
        found = position < self.ids_.size
        found[found] = self.ids_[position[found]] == flat[found]
        if not found.all():
            if unknown == "raise":
                missing = flat[~found][:3].tolist()
                raise ValueError(
                    f"{int((~found).sum())} id(s) not seen in training, e.g. {missing}."
                )
            position[~found] = -1
        return position.astype(np.int64).reshape(raw.shape)

    def to_raw(self, indices):
        """Map indices (0..n-1) back to raw ids; -1 (padding) is not allowed."""
        indices = np.asarray(indices)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise ValueError(f"indices must lie in [0, {len(self)}).")
        return self.ids_[indices]


class Dataset:
    """Ratings keyed by raw ids, ready to fit: ``model.fit(Dataset(users, items, values))``.

    Parameters
    ----------
    users, items : array_like of int or str
        Raw ids of each rating (numpy arrays, lists or pandas columns).
    values : array_like of float, optional
        One value per rating; all ones if not given (implicit feedback).
    user_map, item_map : IdMap, optional
        Reuse existing maps (e.g. a training set's for a test set); ratings
        with ids outside them raise.

    Attributes
    ----------
    user_map, item_map : IdMap
    rows, cols : ndarray of int64
        The indices of each rating.
    values : ndarray
    shape : tuple (len(user_map), len(item_map))
    """

    def __init__(self, users, items, values=None, user_map=None, item_map=None):
        users = _as_id_array(users, "users")
        items = _as_id_array(items, "items")
        self.values = np.ones(users.size, np.float32) if values is None else np.asarray(values)
        if not users.size == items.size == self.values.size:
            raise ValueError(
                f"users, items and values must have the same length; got {users.size}, "
                f"{items.size} and {self.values.size}."
            )
        self.user_map = user_map if user_map is not None else IdMap(users)
        self.item_map = item_map if item_map is not None else IdMap(items)
        self.rows = self.user_map.to_index(users)
        self.cols = self.item_map.to_index(items)
        self.shape = (len(self.user_map), len(self.item_map))

    @property
    def triplets(self):
        """``(rows, cols, values)`` in indices."""
        return self.rows, self.cols, self.values
