"""Unimodal branches compared with the multimodal runs (SPEC sections 8-9).

`text` (always run by the stage): the private profiles' text-view questions, a language model
alone (by default the base VLM's), fine-tuned, unlearned and scored by the main pipeline's code
(`models.train`, `methods.runner.Unlearner`, `models.engine.evaluate` and the main evaluator's
metric functions); `text.run_branch` returns rows of `unimodal_results.json` (datasets
`text_icu`, `text_fiu`, `text_umu`).
`cifar`: CIFAR-10 class / random-subset forgetting with a small CNN, the classifier versions of
the section 6 losses (`methods.CLASSIFIER_METHODS`) and the section 7 metric functions of
`mmunlearn.metrics` (accuracy, `rows.mia_features`, `mia_attack`); `run_branch` returns rows of
`unimodal_results.json`.
"""
from mmunlearn.unimodal.cifar import (DEFAULT_CFG, SETTINGS, load_cifar10, run_branch, run_seed,
                                      validate_cfg, write_cifar10)
from mmunlearn.unimodal.methods import CLASSIFIER_METHODS

__all__ = ["CLASSIFIER_METHODS", "DEFAULT_CFG", "SETTINGS", "load_cifar10", "run_branch", "run_seed",
           "validate_cfg", "write_cifar10"]
