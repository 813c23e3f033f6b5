/* pair_style mlpot: Behler–Parrinello potentials exported by mlpot (TorchScript), in LAMMPS.

   Part of mlpot (MIT licence). Built as a LAMMPS plugin against the headers of the user's
   LAMMPS and the libtorch of the user's torch: see mlpot/lammps/CMakeLists.txt and
   docs/lammps.md. No LAMMPS source is copied here; only its public headers are included.

   Usage (units metal: Å, eV):
     plugin load  /path/to/mlpotplugin.so
     pair_style   mlpot [threads N]
     pair_coeff   * * model-deploy.pt Si O      # one element (or NULL) per atom type

   Each step every rank passes its local atoms, the ghost atoms they see within the model's
   cutoff and a full neighbour list to the model's forward_lammps method
   (mlpot/io/export.py), which returns per-atom energies of the local atoms, forces on local
   and ghost atoms and per-pair gradients dE/dr_ij (for the virial). */

#ifdef PAIR_CLASS
// clang-format off
PairStyle(mlpot,PairMLPot);
// clang-format on
#else

#ifndef LMP_PAIR_MLPOT_H
#define LMP_PAIR_MLPOT_H

#include "pair.h"

#include <torch/script.h>

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairMLPot : public Pair {
 public:
  PairMLPot(class LAMMPS *);
  ~PairMLPot() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

  // newton off: ghost forces (and per-atom virials) are summed onto their owners here,
  // through LAMMPS's reverse communication, since LAMMPS does not do it then.
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 protected:
  torch::jit::Module module;      // the exported model
  torch::Device device;           // where the model's buffers live (inputs are sent there)
  std::vector<std::string> model_elements;    // species order of the model
  std::vector<int> type_species;  // atom type (1..ntypes) -> model species, -1 for NULL
  double cutoff;                  // the model's largest cutoff, Å
  std::string model_dtype;        // "float32" or "float64", for the log
  int nthreads;                   // torch intra-op threads per rank (0: torch's default)

  // Per-step buffers, kept between steps to avoid reallocation.
  std::vector<int> compact;              // LAMMPS atom index -> model input row, -1 if absent
  std::vector<int> row_atom;             // model input row -> LAMMPS atom index
  std::vector<double> positions;         // (rows, 3) Å
  std::vector<int64_t> species;          // (rows,)
  std::vector<int64_t> edges;            // (2, P): centres then neighbours
  std::vector<double> reverse_buffer;    // (nall, 9): newton off reverse communication

  void allocate();
  void load_model(const std::string &path);
  int build_inputs(int &n_local_rows);
  void tally(const torch::Tensor &energies, const torch::Tensor &forces, const torch::Tensor &model_virial,
             const torch::Tensor &pair_gradients, int n_local_rows);
  void tally_atom_virial(const torch::Tensor &pair_gradients, double *accumulate, int stride);
};

}    // namespace LAMMPS_NS

#endif
#endif
