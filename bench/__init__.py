"""The benchmark harness of the federation proxy: ``python -m bench`` (see docs/performance.md).

Modules: :mod:`.config` (what to measure, presets), :mod:`.clusters` (emulated worlds and
route tables), :mod:`.service` and :mod:`.chp` (the processes measured), :mod:`.measure`
(timed requests), :mod:`.run` (the figures), :mod:`.report` (markdown).
"""
