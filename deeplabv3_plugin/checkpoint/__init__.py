"""Checkpoint loading and publishing: every route a checkpoint takes into the plugin
(:mod:`.routes`), the safe loader of mmengine's pickle files (:mod:`.loader`: a linear-time
opcode scan, :mod:`.pickle_scan` and :mod:`.pickle_calls`, then torch's weights-only unpickler
with the inert stand-ins of :mod:`.safe_globals`), config text made inert (:mod:`.meta`), and the
safetensors format (:mod:`.safetensors_format`, :mod:`.publish`); whether a checkpoint fits a
model (:mod:`.compatibility`) and the package's one model builder (:mod:`.segmentor`). See
``docs/checkpoint_safety.md``."""
