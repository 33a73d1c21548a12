"""Facts of a scene value that every stage must spell the same way: its canonical string and its keys.

The schema (:mod:`larr.data.schema`) says which scene features a data set has and how each value
is rendered as text (:meth:`~larr.data.schema.SceneFeature.render`); this module says how a value
is *named*: the one string form used in vocabularies (:func:`canonical_value`) and the keys its
frozen LLM vector is stored under, so that the stage that writes vectors and the stages that read
them agree: ``scene/weather/heavy rain``, ``scene/hour/12``, ``scene_whole/<whole scene text>``,
``shop/123``, ``user/7``.
"""
from __future__ import annotations

import numpy as np


def canonical_value(value: object) -> str:
    """The one string form of a scene value used in keys and vocabularies.

    NumPy scalars become Python ones first (so ``np.int64(12)`` and ``12`` both give ``"12"``),
    booleans are ``true``/``false`` and floats use Python's shortest round-trip ``repr``.
    Strings pass through unchanged, so canonicalising twice is harmless.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def scene_key(feature: str, value: object) -> str:
    """Key of one scene feature's value, e.g. ``scene/weather/heavy rain``."""
    return f"scene/{feature}/{canonical_value(value)}"


def whole_scene_key(text: str) -> str:
    """Key of a whole rendered scene (the ``whole_text`` ablation encodes a scene as one text)."""
    return f"scene_whole/{text}"


def key_group(key: str) -> str:
    """The prefix a key shares with its kin: ``scene/<feature>/`` for a scene value, else its kind
    (``shop/``, ``scene_whole/``). Parsed from the front: values and texts may contain ``/``."""
    kind, _, rest = key.partition("/")
    return f"{kind}/{rest.partition('/')[0]}/" if kind == "scene" else f"{kind}/"


def shop_key(shop_id: object) -> str:
    return f"shop/{canonical_value(shop_id)}"


def user_key(user_id: object) -> str:
    return f"user/{canonical_value(user_id)}"
