"""Supervised regression heads with honest uncertainties, on an index's frozen vectors or a fine-tuned encoder.

Regress a physical quantity of the catalogue (an Einstein radius, a photometric
redshift, a stellar mass) from the cutouts' vectors, with error bars in two parts:
aleatoric (the noise each network predicts as a variance) and epistemic (how much
networks disagree).

Methods
-------
``ensemble`` (default)
    A deep ensemble (Lakshminarayanan et al. 2017) of ``members`` MLPs, each with a
    mean and a variance output (softplus plus a floor, bounded), trained with the
    Gaussian negative log-likelihood from its own initialisation and batch order.
    Combined as a mixture: mean of the means; aleatoric variance = mean of the
    variances; epistemic variance = variance of the means.
``mc-dropout``
    One such MLP with dropout kept on at prediction time (Gal & Ghahramani 2016),
    ``mc_samples`` passes combined the same way.
``ridge``
    Ridge regression (alpha by generalised cross-validation), the baseline; its
    error bar is the validation rows' RMS residual (aleatoric only).

Training: targets standardised (median, MAD), features standardised, AdamW,
gradient clipping, early stopping on half of a validation split (20 %), a NaN
guard (:mod:`ulisse.plugins.heads.models`), and one variance factor fitted on
the other half so that its NLL is smallest (``calibrate``; the report gives the
uncalibrated numbers too). A factor fitted on the rows early stopping chose the
networks by comes out too small (intervals too narrow on new objects).

Fine-tuned (``--finetune all|last``, :mod:`.finetune`): each member of the ensemble
(or the one MC-dropout network) trains the index's encoder (``all``: the whole
network, the more accurate, 2 members by default; ``last``: ``blocks[4:]`` and the head
convolution of Lite0, 3 members) with a Gaussian mean-and-variance MLP on its pooled map,
on the cutouts the index points at (its ``source`` column), with rotations and flips
(``--augment rot-flip``, the default) or none. Only the trained stages are stored.

Storage: ``DIR/derived/heads/NAME/`` (``head.safetensors`` and ``head.json`` with
the training ids, encoder spec and metrics); a name already stored is refused before any
training unless ``--overwrite`` (``overwrite=True``) replaces it. Predictions of every head for every
object are the derived-column set ``heads`` (``NAME``, ``NAME_std``,
``NAME_std_aleatoric``, ``NAME_std_epistemic``): stored with the index,
recomputed after an add, joined into query tables and exports, usable in
``--where``.

Example::

    ulisse head train indexes/lenses --target theta_E --name theta_E_pred --members 5
    ulisse head train indexes/lenses --target theta_E --name theta_E_ft --finetune all
    ulisse head report indexes/lenses --name theta_E_pred --truth theta_E --out report/
    ulisse query indexes/lenses --id lens-000001 --where "theta_E_pred > 2"

    >>> from ulisse.plugins.heads import train_head, predict_head, head_report, list_heads
    >>> train_head(index, "theta_E", "theta_E_pred", method="ensemble")     # doctest: +SKIP
"""

from __future__ import annotations

from ulisse._lazy import lazy_api

# The API loads on first use (torch with it): the plugin's hooks, in plugin.py, import none of it,
# so ``ulisse --help`` and queries that embed nothing stay free of torch.
__getattr__, __dir__ = lazy_api(__name__, {'DERIVED_SET': 'common', 'METHODS': 'common', 'Head': 'core', 'TrainedHead': 'core', 'columns_of': 'core', 'compute_columns': 'core', 'head_names': 'core', 'list_heads': 'core', 'load_head': 'core', 'predict_head': 'core', 'read_ids': 'core', 'remove_head': 'core', 'train_head': 'core', 'HeadReport': 'report', 'head_report': 'report', 'regression_metrics': 'metrics', 'TrainConfig': 'models', 'TrainingError': 'models', 'FinetuneConfig': 'finetune', 'train_finetuned': 'finetune'})


__all__ = ["train_head", "predict_head", "head_report", "list_heads", "load_head", "remove_head", "head_names",
           "columns_of", "read_ids", "regression_metrics", "Head", "TrainedHead", "HeadReport", "TrainConfig",
           "TrainingError", "METHODS", "DERIVED_SET", "FinetuneConfig", "train_finetuned"]
