"""The rule language of stage models: parse text to a tree, analyse it, compile it.

`parse` and `to_text` live in `rules.parser`, the tree in `rules.ast`, the compiler to
Ibis expressions in `rules.compile`, and the walks the model loader and the stage
engine need (names, calls, time thresholds) in `rules.analysis`.
"""

from clm.lifecycle.rules.parser import parse, to_text

__all__ = ["parse", "to_text"]
