"""Methods that learn nothing: the no-learning rule (:mod:`vent.baselines.rules`) and classical CT ventilation from
deformable registration (:mod:`vent.baselines.ctvi`, registration backends in :mod:`vent.baselines.registration`).

``vent.baselines:densest_inhale_fold`` is the registry's trainer of the rule; the CT-ventilation trainers are imported
from ``vent.baselines.ctvi`` only when used, so importing this package never imports itk.
"""

from __future__ import annotations

from vent.baselines.rules import densest_at_inhale, densest_inhale_fold

__all__ = ["densest_at_inhale", "densest_inhale_fold"]
