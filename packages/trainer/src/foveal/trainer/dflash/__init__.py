"""DFlash draft training: a block-parallel draft conditioned on a frozen target's hidden states (`foveal dflash`).

Modules: `blocks` (anchors, blocks, masks, loss weights), `weights` (the target's shared embedding and head),
`target` (feature capture, greedy continuations), `draft` (the draft model), `loss`, `speculate` (acceptance
under greedy verification), `data` (prompts and self-distilled responses), `train` (the loop and command).
"""

from foveal.trainer.dflash.draft import DFlashDraft, DraftSpec
from foveal.trainer.dflash.speculate import EvalResult, evaluate
from foveal.trainer.dflash.target import FrozenTarget

__all__ = ["DFlashDraft", "DraftSpec", "EvalResult", "FrozenTarget", "evaluate"]
