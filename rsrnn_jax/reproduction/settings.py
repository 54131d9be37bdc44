"""The reproduction's data settings: the same models and budget on two geometries (docs/reproduction.md).

A setting names the variant of the config file every run starts from (``configs/demo.py:setting=NAME``) and the
ε grids its attacks use: the ε that matter depend on the images (their size, contrast and the object's scale), so
each setting has its own, while the budget fixes everything else (steps, seeds, images, iterations).

  demo            the 96² canvas with 28² items seen through 32² glimpses (image : glimpse = 3 : 1)
  paper_geometry  the paper's ImageNet100 proportions: 168² images for the same 32² glimpses (5.25 : 1), the item
                  at ImageNet's mean object scale, the whole-image models on the image resized to 2/3
                  (docs/design.md § The paper-geometry setting)

Each setting's runs, report and verdicts live in ``OUT/<setting>/``; ``OUT/report.md`` and ``OUT/verdicts.json``
put the settings side by side (:mod:`rsrnn_jax.reproduction.report`).
"""
from __future__ import annotations

import dataclasses

from rsrnn_jax.reproduction.budgets import Budget


@dataclasses.dataclass(frozen=True)
class Setting:
  """One data setting: the config variant and the attacks' ε grids (profile paper and adaptive)."""
  name: str
  config_args: str                 # appended to the config file's arguments, e.g. "setting=paper_geometry"
  epsilons: tuple                  # profile paper, untargeted
  targeted_epsilons: tuple         # profile paper, targeted
  adaptive_epsilons: tuple         # profile adaptive (robust flags carry over from the smaller ε)
  why_epsilons: str = ""           # how the grid was chosen (the report prints it)
  # {model's display name: why its clean gap to RS-RNN is not the paper's}: printed beside a Table 1 exception
  table1_reasons: dict = dataclasses.field(default_factory=dict)

  def budget(self, budget: Budget) -> Budget:
    """``budget`` with this setting's ε grids (a budget with ``setting_epsilons`` off keeps its own: the smoke
    test's single large ε)."""
    if not budget.setting_epsilons:
      return budget
    return dataclasses.replace(budget, epsilons=self.epsilons, targeted_epsilons=self.targeted_epsilons,
                               adaptive_epsilons=self.adaptive_epsilons if budget.adaptive_epsilons else ())

  def config_arg(self, args: str) -> str:
    """The config file's argument string with this setting's variant appended."""
    return ",".join(a for a in (args, self.config_args) if a)


# The demo's grids: the first full run's paper grid (0.01, 0.02) with the 0.03 it cut for time, the adaptive
# profile at 0.02 and 0.03.
DEMO = Setting(
    name="demo", config_args="", epsilons=(0.01, 0.02, 0.03), targeted_epsilons=(0.05,),
    adaptive_epsilons=(0.02, 0.03),
    why_epsilons="the demo's grid (docs/attacks.md): the paper's ImageNet ε do almost nothing on Fashion-MNIST",
    table1_reasons={
        "GF-Net-m": "the demo's 28-px item fits almost whole in the 0.25 crop (24 px) and whole in the 0.5 crop, "
                   "seen at full resolution, while the retina compresses all but its centre (docs/zoo.md § The "
                   "glance's saliency scale)",
        "S3TA": "the whole-image models see the demo's canvas at full size (the paper's at 2/3: 224² of 336²) and "
                "its small item fills little of a glimpse: proportions the paper_geometry setting corrects "
                "(docs/design.md § The paper-geometry setting)",
        "FF-CNN": "as S3TA: the whole canvas at full size, the paper's at 2/3 (docs/design.md § The "
                  "paper-geometry setting)"})
# paper_geometry: a pilot (tools/eps_pilot.py on RS-RNN seed 0, 500 test images; docs/results/paper_geometry/)
# put RS-RNN under the paper's attack at step k near the paper's values at 2e-3 / 3e-3 / 5e-3 at these three ε;
# the adaptive profile at the lower two, where those values leave room for a difference between models.
PAPER_GEOMETRY = Setting(
    name="paper_geometry", config_args="setting=paper_geometry", epsilons=(0.01, 0.02, 0.03),
    targeted_epsilons=(0.05,), adaptive_epsilons=(0.01, 0.02),
    why_epsilons=("RS-RNN under the paper's attack at step k lands near the paper's RS-RNN at 2e-3 / 3e-3 / 5e-3 "
                  "(AAAI Fig. 4: 49 / 35 / 15%) at 0.01 / 0.02 / 0.03 (a pilot on seed 0, 500 images: "
                  "docs/results/paper_geometry/eps_pilot_*.json); the adaptive profile at the lower two"),
    table1_reasons={
        "GF-Net-m": "its 0.25 crop holds 42 px of the 100-px item (18% of its area), too little of a Fashion-MNIST "
                   "silhouette; with a 0.5 crop the same model is within the tolerance (the seed-0 ablation: "
                   "docs/zoo.md § The glance's saliency scale, docs/results/paper_geometry/gfnet_m_ablation/)"})
SETTINGS = {s.name: s for s in (DEMO, PAPER_GEOMETRY)}


def get(name: str) -> Setting:
  if name not in SETTINGS:
    raise ValueError(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}")
  return SETTINGS[name]
