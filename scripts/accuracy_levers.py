#!/usr/bin/env python
"""The levers of the mlearn recipe, each an ablation of examples/mlearn.yaml, side by side.

Every lever is one ``scripts/bench_mlearn.py`` call: the same elements, seeds and epoch budget,
with its own config overrides, into ``RUNS/mlearn-<el>-<lever>/seed<k>`` and
``RUNS/bench_mlearn-<lever>.json`` (log: ``RUNS/<lever>.log``). The plan is printed first; a finished lever is skipped
and an interrupted one resumes from its checkpoints, so the script continues where it
stopped (run it again with the same arguments). A lever finished on an earlier recipe keeps
its result, and the plan says so with the settings that differ from today's recipe (rerun it
into another ``--runs`` folder to measure it on today's). ``--summary`` prints the table of all
finished levers (test MAE, elastic constants against DFT) without training.

Usage: python scripts/accuracy_levers.py [--elements Si Mo] [--seeds 0 1 2] [--epochs 300]
           [--levers base stress1000 ...] [--runs runs/accuracy] [--summary]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench_mlearn import CONFIG, _stats, config_changes, result_file, run_folder, run_overrides

ROOT = Path(__file__).resolve().parents[1]
#: Each finished lever's result file (per-seed rows, per group), committed: runs/accuracy is
#: not, and a fresh clone lacks it; --summary and the skipping of finished levers read both.
KEPT = ROOT / "docs" / "accuracy" / "results"
SCREEN_EPOCHS = 300  # the screening budget; the recipe's full budget is 600 (training.epochs)

#: The descriptor of the recipe before selection: 38 hand-picked terms (14 radial, 24 G4).
HAND38 = [
    "descriptor.radial=[{grid: {count: 10, mode: shift, r_lower: 1.6}}, {grid: {count: 4, mode: center, r_lower: 1.5}}]",
    "descriptor.angular=[{kind: G4, zetas: [1, 2, 4, 16], lambdas: [-1, 1], "
    "grid: {count: 3, mode: center, r_lower: 2.0, r_upper: 5.0}}]",
    "descriptor.select=null",
]
#: The recipe's pool of 90 candidates with 36 shifted G4 terms more (r_s on the neighbour
#: shells, ζ ∈ {1, 4, 16}): 126 candidates.
POOL126 = [
    "descriptor.angular=[{kind: G4, zetas: [1, 2, 4, 8, 16], lambdas: [-1, 1], "
    "grid: {count: 5, mode: center, r_lower: 1.5, r_upper: 5.5}}, "
    "{kind: G5, zetas: [1, 4], lambdas: [-1, 1], grid: {count: 3, mode: center, r_lower: 2.0, r_upper: 5.0}}, "
    "{kind: G4, zetas: [1, 4, 16], lambdas: [-1, 1], grid: {count: 6, mode: shift, r_lower: 1.8, r_upper: 5.0}}]",
]
#: The pool of 90 candidates of the recipe until pool172-cur96 (28 radial, 50 G4, 12 G5).
POOL90 = [
    "descriptor.radial=[{grid: {count: 20, mode: shift, r_lower: 1.6}}, {grid: {count: 8, mode: center, r_lower: 1.5}}]",
    "descriptor.angular=[{kind: G4, zetas: [1, 2, 4, 8, 16], lambdas: [-1, 1], "
    "grid: {count: 5, mode: center, r_lower: 1.5, r_upper: 5.5}}, "
    "{kind: G5, zetas: [1, 4], lambdas: [-1, 1], grid: {count: 3, mode: center, r_lower: 2.0, r_upper: 5.0}}]",
]
#: A richer pool of 172 candidates (the recipe's since pool172-cur96) over the whole 6.5 Å:
#: 24 shifted and 8 centred radial terms; narrow G4 at ζ up to 32 and six radial widths up
#: to 6 Å, G4 shifted onto the neighbour shells (1.8-5.5 Å), and wide G5 at four widths.
POOL172 = [
    "descriptor.radial=[{grid: {count: 24, mode: shift, r_lower: 1.6}}, {grid: {count: 8, mode: center, r_lower: 1.5}}]",
    "descriptor.angular=[{kind: G4, zetas: [1, 2, 4, 8, 16, 32], lambdas: [-1, 1], "
    "grid: {count: 6, mode: center, r_lower: 1.5, r_upper: 6.0}}, "
    "{kind: G4, zetas: [1, 4, 16], lambdas: [-1, 1], grid: {count: 6, mode: shift, r_lower: 1.8, r_upper: 5.5}}, "
    "{kind: G5, zetas: [1, 2, 4, 16], lambdas: [-1, 1], grid: {count: 4, mode: center, r_lower: 1.5, r_upper: 5.5}}]",
]


def _with_fine_shells(zetas: str, kind: str = "G4", shells: int = 12) -> list[str]:
    """The pool of 172's angular terms (``POOL172[1]``) with terms shifted onto ``shells``
    shells from 2.0 to 6.0 Å (12: 0.36 Å apart, against 0.74 Å for the pool's 6 shifted
    shells) at the ζ of ``zetas`` (e.g. ``"1, 4, 16"``), λ = ±1. G4: the angles of the
    triplets whose three distances all lie near one shell (the Gaussian takes r_ij, r_ik and
    r_jk); G5: of the triplets whose two legs lie near it, whatever r_jk."""
    return [POOL172[1][:-1] + f", {{kind: {kind}, zetas: [{zetas}], lambdas: [-1, 1], "
                              f"grid: {{count: {shells}, mode: shift, r_lower: 2.0, r_upper: 6.0}}}}]"]


#: The pool of 172 with 120 fine-shell G4 terms more (ζ ∈ {1, 2, 4, 8, 16}): 292 terms.
POOL292 = _with_fine_shells("1, 2, 4, 8, 16")

#: lever → config overrides against examples/mlearn.yaml ("recipe": the recipe as shipped: all
#: 292 terms of POOL292, 600 epochs, SiLU, stress in the loss, since angfine-all-e600; 96 of
#: 172 terms chosen by CUR until then, and a pool of 90 with 48 terms until pool172-cur96: a
#: lever measured on an earlier recipe keeps its results, and its docs row says which recipe it
#: changed; --summary marks those). The first levers undo, one after the other, what the
#: recipe took up, to show what each bought.
LEVERS: dict[str, list[str]] = {
    "tanh-nostress": [*HAND38, "model.activation=tanh", "loss.stress_weight=0", "loss.stress_weight_start=null"],
    "tanh": [*HAND38, "model.activation=tanh"],
    "hand38": HAND38,
    "pool90": ["descriptor.select=null"],
    "recipe": [],
    "pool126-cur64": [*POOL126, "descriptor.select={count: 64, method: cur}"],
    "energy30": [*HAND38, "loss.energy_weight=30"],
    "cur48-w128": ["model.width=128"],
    "stress100": ["loss.stress_weight=100"],
    "celu": ["model.activation=celu"],  # measured on the recipe now: Si energy +25 %, force even
    "plain2x64": ["model.depth=2", "model.block=plain"],
    # The depth study's answer so far (2 plain layers) at about the recipe's weight count
    # (23k against the 6 residual blocks' 26k): does the default's depth earn its cost?
    "plain2x128": ["model.depth=2", "model.block=plain", "model.width=128"],
    "lr3e-3": ["optimizer.lr=3e-3"],  # measured on the recipe now: Si energy +39 %, force +9 %
    "batch16": ["training.batch_size=16"],
    # Per-group loss weights: the recipe's Elastic cells sit 1-2 meV/atom off (a constant shift
    # of the crystal's energy against the AIMD frames), which the Elastic weight targets.
    "elastic5": ["loss.weight_by=group", "loss.group_weights={Elastic: 5.0}"],
    # Regularisation: width 128 overfits after ~400 epochs (val force RMSE 145 → 220 meV/Å
    # by epoch 850 while the training loss falls 3×); run these at the full budget (--epochs 1000).
    "adamw1e-2": ["optimizer.name=adamw", "optimizer.weight_decay=1e-2"],
    "survival0.8": ["model.survival=0.8"],
    "w128-adamw1e-2": ["model.width=128", "optimizer.name=adamw", "optimizer.weight_decay=1e-2"],
    "elastic5-surface3": ["loss.weight_by=group", "loss.group_weights={Elastic: 5.0, Surface: 3.0}"],
    # On the recipe with weight decay (AdamW 1e-2 since the full-budget runs): the strength.
    "wd3e-2": ["optimizer.weight_decay=3e-2"],
    "wd1e-3": ["optimizer.weight_decay=1e-3"],
    "wd1e-1": ["optimizer.weight_decay=1e-1"],
    # A longer cutoff: the force error sits at ~0.092 eV/Å (Si) whatever the width, weight
    # decay or optimiser, which points at what the descriptor sees rather than the fit.
    "cutoff6.5": ["descriptor.cutoff=6.5"],
    # The longer cutoff lowered Si's force MAE 9 % (0.084 against 0.092) but took C11 to −7 %;
    # with the stronger weight decay, which moved C11 the other way.
    "cutoff6.5-wd3e-2": ["descriptor.cutoff=6.5", "optimizer.weight_decay=3e-2"],
    # With 3e-2, Si's C11 stayed at −6.3 % (force 0.084): the Elastic cells' weight is the
    # lever that moved C11 (−13 → −7.5 % at 300 epochs, `elastic5`).
    "cutoff6.5-elastic5": ["descriptor.cutoff=6.5", "optimizer.weight_decay=3e-2", "loss.weight_by=group",
                           "loss.group_weights={Elastic: 5.0}"],
    # Loss weights annealed with the cosine learning rate (issue 19; DeePMD-kit's start/limit
    # prefactors, README.md): w = final + (start − final)·lr/lr₀. Forces first (100 → 1), the
    # recipe's energy 100 and stress 1000 throughout:
    "anneal-f100": ["loss.forces_weight_start=100"],
    # DeePMD-like: start force-dominated (energy 1, forces 100), end at the recipe's energy 100
    # and forces 1 (stress 1000 throughout).
    "anneal-deepmd": ["loss.energy_weight_start=1.0", "loss.forces_weight_start=100"],
    # Forces and stress first, together (100 → 1 and 1e5 → 1000): anneal-f100 and
    # anneal-deepmd lowered the Si force MAE 13 % but let C12/C44 drift 7-14 %, as the stress
    # lost its share of the early loss; this keeps the stress/force ratio of the recipe.
    # (Measured on the recipe with the 6.5 Å cutoff and Elastic x5.)
    "anneal-fs100": ["loss.forces_weight_start=100", "loss.stress_weight_start=1e5"],
    # ... with 3x the energy weight, which the anneals so far left behind (+12-21 % energy).
    "anneal-fs100-e300": ["loss.forces_weight_start=100", "loss.stress_weight_start=1e5", "loss.energy_weight=300"],
    # e300 took back most of anneal-fs100's energy loss (Si 3.55 against 4.12 and the recipe's 3.41)
    # and kept its force gain (0.079): does 10x the energy weight take back the rest?
    # (not "-e1000": that is the tag of a lever at the 1000-epoch budget, see _tag)
    "anneal-fs100-ew1000": ["loss.forces_weight_start=100", "loss.stress_weight_start=1e5",
                            "loss.energy_weight=1000"],
    # Beyond 6.5 Å (on the recipe with 6.5 Å and Elastic x5): 5.5 -> 6.5 Å was the largest force
    # gain of any lever (-6 % Si, -10 % Mo); 7.5 Å takes in the next shells (Si 6.27, 6.65, 7.22 Å;
    # bcc Mo 6.29, 6.63, 7.24 Å) at ~1.5x the pairs. The shifted radial grid stretches to r_c.
    "cutoff7.5": ["descriptor.cutoff=7.5"],
    # On the recipe with the annealed weights (anneal-fs100-ew1000). Mo's training energies fit
    # no better than its test ones (AIMD: MAE 3.1 meV/atom on the training set, 2.1 on the test
    # set; `mlpot evaluate --by group`). 300 -> 1000 took Si's energy 3.55 -> 3.18 at +4 % force;
    # a further 3x (measured: it loses on Si, 3.49 / 0.086 against 3.18 / 0.082):
    "energy3000": ["loss.energy_weight=3000"],
    # More of the pool: the force error of both elements is set by what the descriptor sees
    # (the cutoff was the one lever that moved it); 64 of the 90 terms in place of 48
    # (measured: even on both elements, Si 3.39 / 0.080, Mo 2.87 / 0.114).
    "cur64": ["descriptor.select={count: 64, method: cur}"],
    # All 214 (Si) / 194 (Mo) training structures in the fit, none held out: the recipe's best
    # validation epochs sit at 929-997 of 1000 (the anneal's end), so the 10 % held out only
    # confirm the last epoch. Without a validation split the epoch is chosen on the training loss.
    # (Measured: even on both elements, Si 3.38 / 0.080, Mo 2.84 / 0.114.)
    "trainall": ["data.val_fraction=0"],
    # Si generalises worse than it fits (training energy MAE 2.0 against 3.18 on the test set):
    # a quarter of the weights (width 32, ~7k per element) as a regulariser.
    # (Measured: it loses on Si energy, +16 %, every group worse; force even.)
    "w32": ["model.width=32"],
    # More optimisation overfits: 3x the learning rate (best epochs 527-642, energy +39 %) and
    # 2x the epochs (energy +48 %) both lost. Half the rate fits the training set more slowly.
    # (Measured: it loses too, Si energy +15 %, force unchanged: 1e-3 is the optimum.)
    "lr5e-4": ["optimizer.lr=5e-4"],
    # Input scaling: min-max to [-1, 1] (n2p2's scale_center) lets a few extreme structures
    # (surfaces, hot AIMD frames) set every feature's range and squeeze the bulk of the data
    # into a narrow band; z-scores give each feature unit spread over the training atoms.
    # (Measured: it trades energy for force on Si, force -5 %, energy +27 %.)
    "standard": ["scaling.mode=standard"],
    # Smaller batches (2 structures, ~125 atoms; from 4): twice the steps per epoch, more
    # gradient noise, which often generalises better on a small data set. (Measured on the
    # recipe now, seed 0, 600 epochs: training force RMSE -12 % (Si) and -15 % (Mo), test
    # force RMSE +10 % and +5 %; Mo's energy RMSE 3.85 against 4.48 meV/atom.)
    "batch2": ["training.batch_size=2"],
    # A longer weight average (EMA horizon ~1000 steps from ~200): the validated model is a
    # smoother average of the late iterates. (Measured: even on Si, 3.18 / 0.082.)
    "ema0.999": ["training.ema_decay=0.999"],
    # G4 against G5 (issue 19's "G5 vs G4"), like for like: the recipe's pool with its
    # angular terms all narrow (G4: the three atoms within the cutoff of each other) or all
    # wide (G5: only the two bonds to the centre atom), on the recipe's G4 grid (5 ζ × 2 λ ×
    # 5 widths = 50 terms, 78 in the pool), 48 chosen by CUR as in the recipe.
    "g4only": ["descriptor.angular=[{kind: G4, zetas: [1, 2, 4, 8, 16], lambdas: [-1, 1], "
               "grid: {count: 5, mode: center, r_lower: 1.5, r_upper: 5.5}}]"],
    # (Measured: G4 alone is even with the recipe, 3.17 / 0.082; G5 alone loses energy, 3.94 / 0.080.)
    "g5only": ["descriptor.angular=[{kind: G5, zetas: [1, 2, 4, 8, 16], lambdas: [-1, 1], "
               "grid: {count: 5, mode: center, r_lower: 1.5, r_upper: 5.5}}]"],
    # A Huber loss on the forces (loss.huber, δ = 0.1 eV/Å per component, about the recipe's
    # force MAE on Si; its RMSE is 1.5x the MAE, a heavy tail from the disordered frames):
    # errors beyond δ pull linearly, so the fit spends less on the tail that the test MAE
    # weighs like any other error. And on the energies too (δ = 5 meV/atom, about the
    # recipe's energy RMSE on Si).
    # (Measured: huber-f0.1 loses on Si, force 0.090, energy 3.91.)
    "huber-f0.1": ["loss.huber={forces: 0.1}"],
    # What the descriptor sees. The recipe's force error on Si is nearly as large on its own
    # training structures as on the test set (0.069 against 0.082 eV/Å, seed 0 of ema0.999),
    # while its energies are fitted 1.6x better in training than in test: the forces are
    # limited by the representation, not by overfitting. All 90 terms of the pool, and 96
    # chosen from a richer pool of 172, test that at the full budget.
    # (Measured on Si: pool90-all is even with the 48-term recipe, 3.29 / 0.083; pool172-cur96
    # lowers the force error, 3.34 / 0.077, and Mo's both errors: the recipe since.)
    "pool90-all": [*POOL90, "descriptor.select=null"],
    "pool172-cur96": [*POOL172, "descriptor.select={count: 96, method: cur}"],
    "huber-f0.1-e0.005": ["loss.huber={forces: 0.1, energy: 0.005}"],
    # How many of the 172 (on the recipe now, 96 of them): the old pool gained nothing from
    # more of its terms (pool90-all), but the richer pool lowered the force error, so the
    # count is measured again on it; and a wider net (96) for the wider input.
    # (Measured on Si: 128 terms lower the energy MAE 12 %, 2.93 / 0.079 against 3.34 / 0.077,
    # every seed's energy down and force up.)
    "pool172-cur128": [*POOL172, "descriptor.select={count: 128, method: cur}"],
    "pool172-all": [*POOL172, "descriptor.select=null"],
    "pool172-cur64": [*POOL172, "descriptor.select={count: 64, method: cur}"],
    "w96": ["model.width=96"],
    # Energy per atom against total energy (issue 19's "energy per atom vs total"): the energy
    # term weighs each structure's (ΔE/n)² by n^q (loss.energy_size_exponent). The mlearn
    # training sets are nearly of one size (Si: 63/64 atoms but for 12 slabs of 12-96 atoms;
    # Mo: 53/54 but for 10 slabs of 6-36 and one 2-atom cell), so q mainly weighs the slabs
    # less (more the 96-atom one): q = 1 weighs every atom alike, q = 2 is the total-energy loss.
    # (Measured on Si, on the recipe with forces3: energy-total is even in energy, 3.63 against
    # 3.60, and 2 % worse in force in every seed, 0.075 against 0.074; Vacancy energies lower,
    # surfaces and AIMD frames higher.)
    "energy-per-atom-weighted": ["loss.energy_size_exponent=1"],
    "energy-total": ["loss.energy_size_exponent=2"],
    # The forces' final weight (the recipe anneals it 100 -> 1 against energies at 1000): on
    # the recipe now, every seed's validation force MAE is lowest near epoch 600 (77 meV/Å on
    # seed 0) and rises to 80-85 by the end, as the energies take over the loss, while the
    # validation energy MAE keeps falling (2.9 -> 2.1 meV/atom). A final force weight of 3 or
    # 10 measures that trade on the test set.
    # (Measured: forces3 lowers Si's force MAE in every seed, 0.074 against 0.077, and leaves
    # Mo even, 2.79 / 0.111 against 2.78 / 0.111: the recipe since, so on the recipe as
    # shipped now this lever and "recipe" are the same run.)
    "forces3": ["loss.forces_weight=3"],
    "forces10": ["loss.forces_weight=10"],
    # (Measured on Si: both lower the force MAE 4 %, every seed, 0.074; the energy MAE moves
    # within its spread, 3.60 ± 0.54 against 3.34 ± 0.15.) 128 terms lowered the energy and
    # raised the force error: the two together. (Measured: worse than either alone; Si
    # 3.87 / 0.076, every seed's energy higher; Mo 2.56 / 0.113, every seed's force higher.)
    "cur128-forces3": [*POOL172, "descriptor.select={count: 128, method: cur}", "loss.forces_weight=3"],
    # The architecture search's best trial (scripts/search_mlearn.py --element Si: 16 trials,
    # 3-fold cross-validation, 200 epochs, successive halving; the recipe's own values, its
    # baseline trial, were pruned at epoch 50): four plain layers of 110, a higher rate and
    # less weight decay. The depth study at ~25k weights also ranks plain depth 4 first.
    # (Measured on Si at 1000 epochs: 3.37 / 0.079, every seed's force higher than the recipe's.)
    "search-best": ["model.depth=4", "model.width=110", "model.block=plain", "optimizer.lr=1.86e-3",
                    "optimizer.weight_decay=1.92e-2"],
    # Mo's force error is not overfitting: on its own training structures the recipe's Mo
    # model has a force MAE of 104 meV/Å (AIMD frames: 150) against 111 (154) on the test set
    # (`mlpot evaluate --by group`, seed 0), and more terms (cur128) or forces3 do not move it.
    # 5.5 -> 6.5 Å was Mo's largest force gain (-10 %); 7.5 Å was measured only on Si (on an
    # older recipe: force even, energy +11 %). bcc Mo's shells at 6.29 and 6.63 Å sit in the
    # cutoff function's tail at 6.5 Å; at 7.5 Å, 2.77 nearest-neighbour distances as Si's
    # 6.5 Å are, they are seen whole. On the recipe now (96 of 172 terms).
    # (Stopped on Mo at epoch 211 of 1000, at 1.35x the recipe's time per epoch: at epoch 200
    # the validation force MAE was even with the recipe's at the same epoch (156.1/156.8/156.3
    # against 156.4/157.7/155.3 meV/Å), the training force MAE 4 % higher on every seed.)
    "cutoff7.5-pool172": ["descriptor.cutoff=7.5"],
    # Finer angular shells (POOL292). In 300-epoch single-seed probes on Mo (seed 0, final
    # force weight 1; runs/probe), the recipe's force MAE was 116.8 meV/Å on its training set
    # and 119.8 on the test set; all 172 terms gave 119.8 / 121.5, 48 shifted radial terms in
    # place of 24 (all 196) 119.3 / 122.5, width 128 112.7 / 114.0, and all 292 terms with the
    # fine angular shells 108.8 / 111.3 (test energy 2.16 against 3.07 meV/atom): of the
    # descriptor changes, only the angular shells let Mo fit its hot frames better.
    # (Measured at 1000 epochs, 3 seeds, on the recipe with forces3: Mo force 0.105 against
    # 0.111 and energy RMSE 4.09 against 4.72, every seed lower, energy MAE even; Si within its
    # spreads, 3.87 / 0.075; inference 1.6x the recipe's. Best epochs 506-588 of 1000.)
    "angfine-all": [*POOL292, "descriptor.select=null"],
    # (Measured at 1000 epochs, 3 seeds, on the recipe with forces3: Mo force 0.105 against
    # 0.111, every seed lower, but Mo energy 3.49 against 2.79, every seed higher; Si even,
    # 3.74 / 0.074.)
    "angfine-cur96": [*POOL292, "descriptor.select={count: 96, method: cur}"],
    "angfine-cur128": [*POOL292, "descriptor.select={count: 128, method: cur}"],
    # Fewer fine shells' terms (ζ ∈ {1, 4, 16}: 72 in place of 120, a pool of 244), so that CUR
    # keeps more of the radial and centred terms that carried Mo's energies.
    "angfine-z3-cur96": [*_with_fine_shells("1, 4, 16"), "descriptor.select={count: 96, method: cur}"],
    # angfine-all kept Mo's surfaces (9.3 meV/atom against 12.0) where its CUR choice of 96
    # lost them (13.4), as every unselected pool did in the 300-epoch probes: CUR over the
    # training atoms, 1.7 % (Mo) and 2.7 % (Si) of which are in slabs, spends few terms on
    # them. The same choice with each mlearn group weighing alike (select.balance_by), at the
    # recipe's cost.
    "angfine-cur96-bal": [*POOL292, "descriptor.select={count: 96, method: cur, balance_by: group}"],
    "angfine-cur128-bal": [*POOL292, "descriptor.select={count: 128, method: cur, balance_by: group}"],
    # Capacity on the recipe now (all 292 terms): Mo's force error is as large on its training
    # structures as on the test set (above), and in the 300-epoch probes width 128 lowered it
    # 5 % on the 96-term recipe (112.7 / 114.0 against 116.8 / 119.8 meV/Å), about as much as
    # the fine shells did; the two had not been put together. ~125k weights per element.
    # (Probed on Mo, seed 0, 600 epochs: force 105.1 against 106.7 meV/Å, energy 3.01 against 2.72.)
    "w128": ["model.width=128"],
    # The fine shells as G5 in place of G4. A shifted G4 term's Gaussian takes all three sides
    # of the triangle, exp(−η[(r_ij − r_s)² + (r_ik − r_s)² + (r_jk − r_s)²]) with η = 3.8 Å⁻²
    # here: it sees only triplets whose third side is about as long as the legs. Of the angles
    # between two nearest neighbours of ideal bcc Mo (legs 2.74 Å), 70.5° (third side 3.16 Å)
    # weighs at most 0.49 on the 12 shells, 109.5° (4.47 Å) 4e-4 and 180° (5.47 Å) 5e-9:
    # two of the three nearest-neighbour angles are nearly invisible to these terms. A
    # shifted G5 term leaves r_jk out and weighs all three alike. Same count (292 terms).
    # (Probed on Mo, seed 0, 600 epochs, against the recipe's seed 0: energy MAE 2.56 against
    # 2.70 meV/atom, RMSE 3.97 against 4.48 (surfaces 7.9 against 10.0), but force MAE 108.7
    # against 103.5 meV/Å and training force RMSE 167 against 159: the triangle's third side
    # is what the fine G4 shells give the forces.)
    "angfine-g5shells": _with_fine_shells("1, 2, 4, 8, 16", kind="G5"),
    # Finer still: 16 shells 0.27 Å apart (η 6.9 Å⁻²) in place of 12, 332 terms. The 12 fine
    # G4 shells were the one descriptor change that let Mo fit its hot frames better, and as
    # G5 (legs only) they fit Mo's forces worse (above).
    "angfine16": _with_fine_shells("1, 2, 4, 8, 16", shells=16),
    # (Probed on Mo, seed 0: energy MAE 2.45 against 2.70, force MAE 107.6 against 103.5 meV/Å
    # with the training forces fitted as well, 157 against 159: the extra terms over-fit the
    # hot frames.) With three times the weight decay, to keep the energy and not the over-fit.
    # (Probed on Mo, seed 0: energy 2.51, force 106.6 meV/Å, training forces 168.6: not taken.)
    "angfine16-wd1e-1": [*_with_fine_shells("1, 2, 4, 8, 16", shells=16), "optimizer.weight_decay=1e-1"],
    # Every training structure in the fit: the recipe holds 10 % out to pick the best epoch,
    # but at 600 epochs the last epoch's validation force RMSE is within 1 % of the best in
    # every run, so the held-out structures can be trained on (GAP and MTP fit all of them);
    # without a validation set the trainer keeps the epoch of the lowest training loss.
    # (Measured, 3 seeds, 600 epochs: energy MAE lower in every seed on both elements, Si 2.97
    # against 3.32 and Mo 2.64 against 2.68 meV/atom; Mo force 0.104 against 0.106, every seed
    # lower; Si force 0.074 against 0.075; Mo stress RMSE +9 %. The recipe since: on the recipe
    # as shipped now this lever and "recipe" are the same run, and "val10" is the recipe before.)
    "all-data": ["data.val_fraction=0"],
    "val10": ["data.val_fraction=0.1"],
    # The depth study's answer at 25k weights (plain depth 4 ahead of every residual cell,
    # docs/depth-study.md) on the recipe as shipped: 4 plain layers of width 98 hold the
    # recipe network's weights (57.9k against 58.3k per element) at the recipe's rate, so
    # only the architecture changes. (The search's plain 4 x 110 was measured on the 96-term
    # recipe at 1000 epochs, with its own rate and weight decay.)
    # (Measured, 600 epochs: force MAE +1.2 (Si, seed 0) and +2.3, +0.1 (Mo, seeds 0 and 1)
    # meV/Å; energy MAE 3.65 against 3.10 on Si, 2.50 and 2.54 against 2.70 and 2.59 on Mo.)
    "plain4x98": ["model.depth=4", "model.width=98", "model.block=plain"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", nargs="+", default=["Si", "Mo"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=SCREEN_EPOCHS,
                        help="training budget; another than the screening one tags the runs <lever>-e<epochs>")
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--summary", action="store_true", help="only print the table of finished levers")
    parser.add_argument("--paired", metavar="LEVER", choices=list(LEVERS),
                        help="with --summary: under each lever, its differences from LEVER (at the same budget) "
                             "seed by seed")
    args = parser.parse_args()
    if not args.summary:
        print(f"plan: {len(args.levers)} levers × {args.elements}, {len(args.seeds)} seeds each (trained together), "
              f"{args.epochs} epochs:")
        for k, lever in enumerate(args.levers, 1):
            tag = _tag(lever, args.epochs)
            state = "to run"
            if _done(args.runs, tag, args):
                changed = _earlier_recipe(args.runs, lever, tag, args)
                state = f"done on an earlier recipe (it differs in {changed})" if changed else "done"
            print(f"  {k:>2}. {lever:<12} {' '.join(LEVERS[lever]) or '(the recipe as shipped)'}  [{state}]")
        for k, lever in enumerate(args.levers, 1):
            tag = _tag(lever, args.epochs)
            if _done(args.runs, tag, args):
                continue
            log = args.runs / f"{tag}.log"
            print(f"[{k}/{len(args.levers)}] {tag} (log: {log})", flush=True)
            command = [sys.executable, str(ROOT / "scripts" / "bench_mlearn.py"), "--elements", *args.elements,
                       "--seeds", *map(str, args.seeds), "--epochs", str(args.epochs), "--tag", tag,
                       "--runs", str(args.runs)]
            if LEVERS[lever]:
                command += ["--set", *LEVERS[lever]]
            args.runs.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as fh:
                if subprocess.call(command, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT) != 0:
                    print(f"  failed: see {log}")
                    return 1
            KEPT.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(result_file(args.runs, tag), result_file(KEPT, tag))
    _summary(args.runs, args.levers, args.elements, args.paired)
    return 0


def _tag(lever: str, epochs: int) -> str:
    """The lever's run tag: its name at the screening budget, ``<name>-e<epochs>`` at another,
    so that one lever at two budgets keeps two result files."""
    return lever if epochs == SCREEN_EPOCHS else f"{lever}-e{epochs}"


def _budget_of(tag: str, lever: str) -> int | None:
    """The budget at which ``lever`` has run tag ``tag`` (:func:`_tag`), or ``None``."""
    found = re.fullmatch(re.escape(lever) + r"-e(\d+)", tag)
    return int(found.group(1)) if found and int(found.group(1)) != SCREEN_EPOCHS else None


# A lever named like another's tag at some budget (``x-e1000``) would share its result files.
assert not any(_budget_of(b, a) for a in LEVERS for b in LEVERS if a != b), \
    "a lever's name equals another lever's tag at a budget (<lever>-e<epochs>)"


def _result(runs: Path, tag: str) -> Path:
    """A tag's result file: in ``runs``, else the kept copy (:data:`KEPT`)."""
    path = result_file(runs, tag)
    return path if path.is_file() else result_file(KEPT, tag)


def _done(runs: Path, tag: str, args) -> bool:
    path = _result(runs, tag)
    if not path.is_file():
        return False
    data = json.loads(path.read_text())
    seeds = [r for r in data["results"] if isinstance(r["seed"], int)]
    return (sorted(data.get("seeds", [])) == sorted(args.seeds) and {r["element"] for r in seeds} >= set(args.elements)
            and all(r.get("epochs", 0) >= args.epochs for r in seeds))


def _earlier_recipe(runs: Path, lever: str, tag: str, args) -> list[str]:
    """The config keys in which a finished lever's first run differs from the lever on the
    recipe as shipped now (empty: the same configuration). A lever keeps its result from the
    recipe of its time; a rerun on today's recipe needs another --runs folder."""
    for el in args.elements:
        changed = config_changes(run_folder(runs, el, tag) / f"seed{args.seeds[0]}", CONFIG,
                                 run_overrides(el, args.epochs, LEVERS[lever]), args.seeds[0])
        if changed:
            return changed
    return []


def _summary(runs: Path, levers: list[str], elements: list[str], paired: str | None = None) -> None:
    print(f"\n{'el':<4}{'lever':<20}{'E MAE meV/at':>16}{'F MAE eV/Å':>16}{'σ RMSE GPa':>14}"
          + "".join(f"{k + ' %':>10}" for k in ("C11", "C12", "C44", "B")) + f"{'B±0.25%':>9}{'B±2%':>8}")
    for el in elements:
        for lever in levers:
            # the screening budget's file first, then the lever at other budgets
            # (not a longer lever's: anneal-fs100-e* also matches anneal-fs100-e300-e1000)
            tags = {p.stem.removeprefix("bench_mlearn-") for folder in (runs, KEPT)
                    for p in folder.glob(f"bench_mlearn-{lever}-e*.json")}
            for path in [_result(runs, t) for t in [lever, *sorted(t for t in tags if _budget_of(t, lever))]]:
                if path.is_file():
                    tag = path.stem.removeprefix("bench_mlearn-")
                    _summary_row(el, tag, path)
                    if paired is not None and paired != lever:
                        budget = _budget_of(tag, lever)
                        base = _result(runs, _tag(paired, budget or SCREEN_EPOCHS))
                        if base.is_file():
                            print(_paired_line(el, path, base, paired))


#: The paired differences :func:`_paired_line` prints: result key, name, unit.
PAIRED = (("energy_mae_mev_per_atom", "E MAE", "meV/atom"), ("energy_rmse_mev_per_atom", "E RMSE", ""),
          ("force_mae_mev_per_a", "F MAE", "meV/Å"), ("force_rmse_mev_per_a", "F RMSE", ""))


def _paired_line(el: str, path: Path, base: Path, base_name: str) -> str:
    """The lever's differences from ``base`` seed by seed (the same seeds, splits and data
    order), and whether every seed moved the same way: with three seeds, the spread over
    seeds hides what a paired comparison shows."""
    def by_seed(file: Path) -> dict:
        return {r["seed"]: r for r in json.loads(file.read_text())["results"]
                if r["element"] == el and isinstance(r["seed"], int)}

    rows, reference = by_seed(path), by_seed(base)
    seeds = sorted(set(rows) & set(reference))
    if not seeds:
        return f"    vs {base_name}: no common seeds"
    parts = []
    for key, name, unit in PAIRED:
        deltas = [rows[s][key] - reference[s][key] for s in seeds]
        every = " (every seed lower)" if all(d < 0 for d in deltas) else (
            " (every seed higher)" if all(d > 0 for d in deltas) else "")
        parts.append(f"Δ{name} " + " ".join(f"{d:+.2f}" for d in deltas) + (f" {unit}" if unit else "") + every)
    return f"    vs {base_name}, seeds {seeds}: " + "; ".join(parts)


def _summary_row(el: str, tag: str, path: Path) -> None:
    """One line of the summary: ``tag``'s mean ± std over seeds for element ``el``."""
    rows = [r for r in json.loads(path.read_text())["results"] if r["element"] == el and isinstance(r["seed"], int)]
    if not rows:
        return
    e = _stats([r["energy_mae_mev_per_atom"] for r in rows])
    f = _stats([r["force_mae_mev_per_a"] / 1000 for r in rows])
    s = _stats([r["stress_rmse_gpa"] for r in rows])
    dft = rows[0]["elastic_dft"]
    errors = "".join(f"{100 * (_stats([r['elastic_model'][k] for r in rows])[0] / dft[k] - 1):>+10.1f}"
                     for k in ("C11", "C12", "C44", "B"))
    b1 = _stats([r["B_ideal_0.0025"] for r in rows])[0]
    b2 = _stats([r["B_ideal_0.02"] for r in rows])[0]
    print(f"{el:<4}{tag:<20}{e[0]:>9.2f}±{e[1]:<6.2f}{f[0]:>9.3f}±{f[1]:<6.3f}{s[0]:>8.3f}±{s[1]:<5.3f}"
          + errors + f"{b1:>9.1f}{b2:>8.1f}")


if __name__ == "__main__":
    sys.exit(main())
