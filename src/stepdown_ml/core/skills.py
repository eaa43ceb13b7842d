"""The skills vocabulary: general (transferable) skills and per-function specialized skills."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepdown_ml.core import config
from stepdown_ml.core.schema import FUNCTIONS, SKILL_TOKEN


@dataclass(frozen=True)
class SkillVocabulary:
    """Known skill tokens. Tokens outside it are still skills; they only match themselves."""

    general: tuple[str, ...]
    specialized: Mapping[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        tokens = list(self.general) + [t for f in FUNCTIONS for t in self.specialized[f]]
        bad = [t for t in tokens if not SKILL_TOKEN.fullmatch(t)]
        if bad:
            raise ValueError(f"skills vocabulary: invalid token(s): {', '.join(bad)}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("skills vocabulary: a token is listed twice")

    @property
    def general_set(self) -> frozenset[str]:
        """General skills as a set."""
        return frozenset(self.general)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "general": list(self.general),
            "specialized": {f: list(self.specialized[f]) for f in FUNCTIONS},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SkillVocabulary:
        """Build from the JSON form."""
        specialized = data["specialized"]
        missing = [f for f in FUNCTIONS if f not in specialized]
        if missing:
            raise ValueError(f"skills vocabulary: no specialized skills for {', '.join(missing)}")
        return cls(
            general=tuple(data["general"]),
            specialized={f: tuple(specialized[f]) for f in FUNCTIONS},
        )


def load_vocabulary(path: Path | str = config.SKILLS_VOCABULARY_PATH) -> SkillVocabulary:
    """Read a vocabulary JSON file (default: the one shipped in ``stepdown_ml/resources``)."""
    with open(path, encoding="utf-8") as handle:
        return SkillVocabulary.from_dict(json.load(handle))
