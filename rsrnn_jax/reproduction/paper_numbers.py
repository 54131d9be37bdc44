"""The paper's published numbers, transcribed once from ``../shared/design/paper.md`` §8 (ImageNet100).

These are the authors' results, NOT ours: ``make reproduce`` (:mod:`rsrnn_jax.reproduction.run`) prints them beside
the numbers it measures on the demo data set and applies its verdict rules to them too. Values read off a
figure carry the read-off tolerance that paper.md gives. Accuracies and ASR are in percent, ε on the [0, 1]
pixel scale, steps counted from 1. Model keys are the paper's names (AAAI draft; ``PAPER["v1_names"]`` gives the
v1 names where they differ); each entry of ``rsrnn_jax.models.registry`` names its key (``paper_key``).
"""
from __future__ import annotations

PAPER = {
    "source": "paper.md §8: arXiv 2206.07282 v1 (R1) and its AAAI-22 draft (RA); ImageNet100, 100 classes",
    # The models' names in the AAAI draft (the keys) and in v1 where they differ.
    "v1_names": {"Base-Retina": "Retina", "DRAM": "Crop-D", "GF-Net-m": "Crop-S"},
    # AAAI Table 1 (RA table.png): top-1 %, input, GRU, attention.
    "table1": {
        "source": "AAAI Table 1 (RA table.png)",
        "top1": {"RS-RNN": 81.94, "Base-Retina": 80.21, "DRAM": 81.77, "GF-Net-m": 81.71, "S3TA": 85.01,
                 "FF-CNN": 82.71},
        "input": {"RS-RNN": "Retinal Image", "Base-Retina": "Retinal Image", "DRAM": "Double Patch",
                  "GF-Net-m": "Single Patch", "S3TA": "Whole Image", "FF-CNN": "Whole Image"},
        "gru": {"RS-RNN": "2D", "Base-Retina": "1D", "DRAM": "1D", "GF-Net-m": "1D", "S3TA": "1D", "FF-CNN": "-"},
        "attention": {"RS-RNN": "Overt", "Base-Retina": "Overt", "DRAM": "Overt", "GF-Net-m": "Overt",
                      "S3TA": "Covert", "FF-CNN": "-"},
    },
    # v1 Table 1 (R1 tablen1): top-1 % (the v1 names Retina, Crop-D, Crop-S).
    "table1_v1": {
        "source": "v1 Table 1 (R1 tablen1)",
        "top1": {"Base-Retina": 75.56, "DRAM": 81.21, "GF-Net-m": 75.14, "S3TA": 83.12, "FF-CNN": 81.75},
    },
    # AAAI Fig. 3 (RA recog.png), read-off ±0.1 GMAC, ±0.3 pt: (GMACs, accuracy %) as the steps grow.
    "accuracy_vs_gmacs": {
        "source": "AAAI Fig. 3 (RA recog.png), read-off ±0.1 GMAC / ±0.3 pt; paper.md gives the first and last "
                  "x of Base-Retina and GF-Net-m (2.19…9.83), the points between are spaced by their 1.09 per step",
        "gmacs_per_step": {"RS-RNN": 1.48, "Base-Retina": 1.09, "DRAM": 2.18, "GF-Net-m": 1.09},
        "gmacs_total": {"S3TA": 10.47, "FF-CNN": 10.24},
        "curves": {
            "RS-RNN": [(1.48, 76.9), (2.95, 80.3), (4.45, 81.2), (5.94, 82.0), (7.40, 81.9), (8.88, 81.95),
                       (10.37, 81.8)],
            "Base-Retina": [(2.19, 76.8), (3.28, 79.05), (4.37, 80.0), (5.46, 80.2), (6.55, 80.2), (7.64, 80.2),
                            (8.74, 80.1), (9.83, 80.2)],
            "GF-Net-m": [(2.19, 70.5), (3.28, 76.5), (4.37, 79.8), (5.46, 81.8), (6.55, 81.6), (7.64, 81.6),
                         (8.74, 81.4), (9.83, 81.4)],
            "DRAM": [(3.28, 77.7), (5.45, 80.4), (7.64, 81.1), (9.83, 81.8)],
            "FF-CNN": [(10.24, 82.7)],
            "S3TA": [(10.47, 85.0)],
        },
    },
    # AAAI Fig. 4 (RA adv1.png), read-off ±1: accuracy % under untargeted PGD on step 4 (5 it., step ε/3),
    # read at step 4 and at step 16.
    "adv_accuracy": {
        "source": "AAAI Fig. 4 (RA adv1.png), read-off ±1; untargeted PGD on step k=4, read at steps 4 and 16",
        "attack_step": 4, "eval_steps": 16, "epsilons": [2e-3, 3e-3, 5e-3],
        "at_k": {"FF-CNN": [8.2, 2.5, 0.8], "S3TA": [7.8, 2.0, 0.0], "GF-Net-m": [31.2, 15.2, 4.4],
                 "DRAM": [38.5, 22.4, 7.1], "Base-Retina": [45.2, 30.6, 13.1], "RS-RNN": [49.0, 34.7, 14.5]},
        "at_T": {"FF-CNN": [8.2, 2.5, 0.8], "S3TA": [10.6, 2.7, 0.0], "GF-Net-m": [33.2, 15.9, 4.5],
                 "DRAM": [39.2, 23.3, 7.1], "Base-Retina": [47.1, 33.4, 14.3], "RS-RNN": [56.5, 44.5, 23.6]},
    },
    # AAAI Fig. 5 (RA adv2.png), read-off ±1.5: accuracy % vs step (attack on step 4, run 16), at steps 1/4/16.
    "adv_accuracy_per_step": {
        "source": "AAAI Fig. 5 (RA adv2.png), read-off ±1.5; accuracy at steps 1 / 4 / 16 (attack on step 4)",
        "steps": [1, 4, 16], "epsilons": [1e-3, 1.5e-3, 2e-3, 2.5e-3, 3e-3, 5e-3, 1e-2],
        "values": {
            "RS-RNN": [[59, 66, 69], [47.5, 56, 62.3], [36.5, 48, 56.5], [29.5, 41.5, 50], [21.5, 34, 44.5],
                       [7, 14, 23.6], [0.3, 2, 4.5]],
            "Base-Retina": [[57.5, 62.5, 64], [47, 53.5, 54.7], [39.5, 45, 47.2], [30.5, 37.5, 39.3],
                            [25, 30.5, 33.2], [9.5, 13, 14.4], [1, 1.5, 2]],
            "DRAM": [[58.5, 61, 61.8], [49, 49.3, 49.3], [41, 38.5, 39.1], [32.3, 29.7, 30.1], [25.8, 22.5, 23.1],
                     [10.2, 7.3, 7.2], [1.6, 0.4, 0.4]],
            "GF-Net-m": [[51.5, 55.5, 58.5], [42, 44, 44.8], [34.2, 31, 33.2], [28.3, 22.8, 23], [21.3, 15.3, 15.8],
                         [8.3, 4.3, 4.6], [1, 0.1, 0.2]],
            "S3TA": [[31, 32.5, 36], [15.2, 15.9, 19.1], [7.8, 7.9, 10.6], [4.2, 3.8, 5.2], [2, 1.9, 2.6], [0, 0, 0],
                     [0, 0, 0]],
        },
    },
    # v1 Table 2 (R1 tablen2): ASR % at step 12 (attack on step 12), untargeted and targeted.
    "asr": {
        "source": "v1 Table 2 (R1 tablen2); PGD on step 12, ASR at step 12",
        "attack_step": 12,
        "untargeted_epsilons": [2e-3, 3e-3, 5e-3, 7e-3], "targeted_epsilons": [3e-3, 5e-3, 7e-3, 1e-2],
        "untargeted": {"Base-Retina": [28.7, 43.1, 65.5, 79.2], "DRAM": [51.0, 71.5, 90.9, 96.7],
                       "GF-Net-m": [64.4, 82.1, 94.1, 97.9], "S3TA": [94.4, 98.1, 99.8, 99.9],
                       "FF-CNN": [90.1, 96.9, 99.3, 99.6]},
        "targeted": {"Base-Retina": [4.3, 12.8, 30.7, 56.8], "DRAM": [20.0, 58.8, 84.6, 96.7],
                     "GF-Net-m": [31.9, 71.4, 88.2, 96.7], "S3TA": [72.6, 93.0, 99.2, 100.0],
                     "FF-CNN": [83.5, 98.4, 99.5, 99.8]},
        # Targeted ASR read off a figure at other ε: v1 Fig. 4a bars (targeted, step 12), FF-CNN-AT.
        "targeted_read_off": {"FF-CNN-AT": {"source": "Fig. 4a", "epsilons": [3e-3, 5e-3, 7e-3],
                                            "values": [2.3, 3.8, 6.3]}},
        "note": "paper.md: the S3TA row looks shifted against v1 Fig. 4a (≈93/100/100 targeted); other rows agree",
    },
}
