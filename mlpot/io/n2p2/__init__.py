"""n2p2 potentials: read ``input.nn`` + ``scaling.data`` + ``weights.XXX.data`` into a
:class:`~mlpot.models.Potential`, and write a Potential back in that format.

What maps onto what (n2p2 ≥ 2.0, short-range "2G" HDNNPs):

=================================  ========================================================
n2p2                               mlpot
=================================  ========================================================
``symfunction_short`` type 2       :class:`~mlpot.descriptors.RadialTerm` (G2)
type 3 (narrow, Gaussian and f_c   :class:`~mlpot.descriptors.AngularTerm` ``kind="G4"``
on all three legs), type 9 (wide)  and ``kind="G5"``; each line restricted to its centre
                                   and neighbour element(s)
``cutoff_type t [α]``              ``cutoff_function`` (1 cos, 2 tanhu, 3 tanh, 4 exp,
                                   5–8 poly1–poly4) and ``cutoff_alpha``
scaling keywords + scaling.data    :class:`~mlpot.descriptors.scaling.FeatureScaler`
``global_*_short``                 a plain :class:`~mlpot.models.NetworkConfig`; letters
                                   t tanh, p softplus ln(1+eˣ), l identity, s sigmoid,
                                   g Gaussian exp(−x²/2), c cos
``mean_energy``, ``conv_energy``,  ``reference_energies`` and ``energy_scale``:
``atom_energy``                    E = Σ_i [mean + offset(Z_i) + NN_i / conv_energy]
=================================  ========================================================

``conv_length`` only rescales n2p2's internal length unit; symmetry functions are
dimensionless, so it does not enter the model (it is kept in ``model.metadata["n2p2"]``
and written back on export).

**Symmetry-function order.** n2p2 does not use the input.nn order: per centre element it
sorts the functions by type, cutoff type, α, r_c, η, r_s, (ζ, λ,) then the neighbour
element(s) by atomic number, and that sorted order is the network's input order and the row
order of scaling.data. mlpot's own per-element order (radial blocks per neighbour element,
then angular blocks per element pair, see
:meth:`~mlpot.descriptors.SymmetryFunctionSpec.features`) differs, so the import permutes
the first layer's weight columns and the scaling statistics into mlpot's order, and the
export permutes them back.

**Units.** n2p2 files carry no units; the model works in eV and Å, so η, r_s, r_c and all
energies are converted at the edge with ``units`` (``"bohr_hartree"``, ``"angstrom_ev"``,
an explicit (Å per length unit, eV per energy unit) pair, or ``"auto"``: read the
``# Length unit : Bohr`` / ``# Energy unit : Ha`` comments that n2p2's examples and this
module's export write). The named systems use :mod:`mlpot.units`, i.e. ASE's constants
(CODATA 2014: 1 Bohr = 0.52917721056 Å, 1 Ha = 27.211386024 eV); CODATA 2018 or n2p2's
LAMMPS-example factors differ in the 8th–9th digit, so pass an explicit pair to
reproduce eV numbers computed with other constants.

**Layout.** :mod:`.parse` reads input.nn's keywords, scaling.data and the weights files;
:mod:`.symmetry` maps symmetry-function lines onto a
:class:`~mlpot.descriptors.SymmetryFunctionSpec` and back, with n2p2's order; :mod:`.read`
assembles the Potential and :mod:`.write` writes one; :mod:`.common` holds the error type,
the letter and cutoff tables and the unit conversions. The networks are reached only
through :meth:`~mlpot.models.ElementNetworks.network` and
:meth:`~mlpot.models.AtomicMLP.linear_layers`.
"""

from .common import ACTIVATION_LETTERS, CUTOFF_TYPES, N2P2Error
from .read import read_potential
from .write import n2p2_feature_order, write_potential

__all__ = ["N2P2Error", "read_potential", "write_potential", "n2p2_feature_order",
           "ACTIVATION_LETTERS", "CUTOFF_TYPES"]
