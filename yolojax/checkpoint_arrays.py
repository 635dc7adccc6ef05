"""A train state's arrays by name, as a checkpoint saves and restores them.

Names are key paths ('params/head/out/kernel'), the same for a live train state and for
orbax's metadata of a saved one, whatever their container types: a state whose containers
changed around the same arrays (an optax upgrade, a masked transform) still restores by name.
Each array's CRC-32 is recorded at save and compared at restore, which tells bytes changed on
a bad disk from the saved state.
"""

import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class DamagedCheckpointError(Exception):
    """A checkpoint's arrays read back other than they were saved (bytes changed on disk)."""


def _leaf_name(path) -> str:
    """'params/head/out/kernel' for a key path into a train state or orbax's metadata of a
    saved one: field names, dict keys and sequence indices, whatever the container types."""

    def name(key) -> str:
        return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))

    return "/".join(name(key) for key in path)


def _named_leaves(tree) -> dict[str, Any]:
    return {_leaf_name(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _shape_of(leaf) -> tuple[int, ...]:
    """The shape of a train state's leaf (a Python scalar too), or of orbax's metadata of one."""
    return tuple(np.shape(leaf) if np.isscalar(leaf) else leaf.shape)


def array_shapes(tree) -> dict[str, tuple[int, ...]]:
    """Leaf name → shape, for a train state or orbax's metadata of a saved one."""
    return {name: _shape_of(leaf) for name, leaf in _named_leaves(tree).items()}


def array_checksums(tree) -> dict[str, list]:
    """Leaf name → [CRC-32 of its bytes, dtype], recorded at save and compared at restore."""
    checksums = {}
    for name, leaf in _named_leaves(tree).items():
        array = np.ascontiguousarray(np.asarray(leaf))
        checksums[name] = [zlib.crc32(array.view(np.uint8).reshape(-1)), str(array.dtype)]
    return checksums


def is_model_array(name: str) -> bool:
    """Whether the train state's array ``name`` is one evaluation and inference use; the
    optimizer's state (and the step) only training does."""
    return name.startswith(("params/", "batch_stats/"))


def check_checksums(saved: dict[str, list] | None, state, *, model_only: bool = False) -> None:
    """Raises DamagedCheckpointError for any array of ``state`` whose bytes differ from
    those saved (``saved`` None: a checkpoint from before checksums were recorded); with
    ``model_only``, of the model's arrays only."""
    if not saved:
        return
    restored = array_checksums(state)
    changed = sorted(
        name
        for name, (crc, dtype) in saved.items()
        if name in restored
        and restored[name][1] == dtype
        and restored[name][0] != crc
        and (not model_only or is_model_array(name))
    )
    if changed:
        raise DamagedCheckpointError(
            f"{len(changed)} arrays read back other than they were saved "
            f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})"
        )


def restore_by_name(manager, step: int, metadata, abstract, *, model_only: bool = False):
    """The saved arrays of ``step``, placed in ``abstract``'s tree by name.

    ``metadata`` is orbax's metadata of the saved state, which has the saved containers.

    The saved tree may differ from the template in nodes without arrays, which orbax would
    report as a structure mismatch that looks like damage: an optax state that became
    ``MaskedState(EmptyState())`` from ``EmptyState()``, a NamedTuple that became a dict.
    The arrays themselves have been checked to match by name and shape; with ``model_only``,
    the model's only, and an array that the checkpoint lacks or holds in another shape
    (another optimizer's state) comes back as zeros.
    """
    wanted = _named_leaves(abstract)

    def request(path, saved):
        name = _leaf_name(path)
        if name in wanted and _shape_of(wanted[name]) == _shape_of(saved):
            return wanted[name]
        return jax.ShapeDtypeStruct(saved.shape, saved.dtype)  # read as saved, left out

    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(jax.tree_util.tree_map_with_path(request, metadata.tree))
        ),
    )
    arrays = _named_leaves(restored["state"])

    def value(path, leaf):
        name = _leaf_name(path)
        if name in arrays and np.shape(arrays[name]) == _shape_of(leaf):
            return np.asarray(arrays[name])
        assert model_only, name  # the layout was checked in full otherwise
        return np.zeros(
            _shape_of(leaf), np.asarray(leaf).dtype if np.isscalar(leaf) else leaf.dtype
        )

    return jax.tree_util.tree_map_with_path(value, abstract)
