/* pair_style mlpot: see pair_mlpot.h for usage and docs/lammps.md for building and testing.

   Units: LAMMPS "metal" (Å, eV, eV/Å), which are mlpot's. The model is a TorchScript file
   written by `mlpot export`; its method forward_lammps(positions (N_all, 3) float64,
   species (N_all,) int64, edge_index (2, P) int64, n_local) returns
     atomic_energies (n_local,) eV, forces (N_all, 3) eV/Å, virial (3, 3) eV,
     pair_gradients (P, 3) eV/Å = dE/dr_p with r_p = x_j - x_i.
   Ghost atoms are explicit: no cell and no image shifts are passed. */

#include "pair_mlpot.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <exception>

using namespace LAMMPS_NS;

namespace {
// Values per atom in the newton-off reverse communication: a force (3) and a per-atom
// virial (6: xx, yy, zz, xy, xz, yz, LAMMPS's order).
constexpr int REVERSE_STRIDE = 9;

// The value of "key" in the flat JSON the export stores beside the model (mlpot_export.json),
// or "" if absent: enough for the one string we log, without a JSON library.
std::string json_string(const std::string &json, const std::string &key)
{
  const std::string needle = "\"" + key + "\": \"";
  const auto start = json.find(needle);
  if (start == std::string::npos) return "";
  const auto end = json.find('"', start + needle.size());
  return json.substr(start + needle.size(), end - start - needle.size());
}
}    // namespace

PairMLPot::PairMLPot(LAMMPS *lmp) :
    Pair(lmp), device(torch::kCPU), cutoff(0.0), nthreads(0)
{
  single_enable = 0;    // a many-body potential has no pair energy
  restartinfo = 0;      // the model file is named again on restart
  one_coeff = 1;        // one "pair_coeff * * file elements..." line
  manybody_flag = 1;
  // The global virial is summed from the pair gradients of this rank's centres, which is
  // exact with newton on and off; virial_fdotr_compute would need ghost forces kept.
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
  unit_convert_flag = 0;
  comm_reverse = REVERSE_STRIDE;
  comm_reverse_off = REVERSE_STRIDE;    // used with newton off (see compute)
}

PairMLPot::~PairMLPot()
{
  if (copymode) return;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairMLPot::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

/* pair_style mlpot [threads N] */
void PairMLPot::settings(int narg, char **arg)
{
  int iarg = 0;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "threads") == 0 && iarg + 1 < narg) {
      nthreads = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (nthreads < 0) error->all(FLERR, "pair_style mlpot: threads must be >= 0 (0: torch's default)");
      iarg += 2;
    } else {
      error->all(FLERR, "pair_style mlpot: unknown keyword {} (usage: pair_style mlpot [threads N])",
                 arg[iarg]);
    }
  }
}

/* pair_coeff * * model-deploy.pt El1 El2 ... (one element or NULL per atom type) */
void PairMLPot::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR, "pair_coeff for mlpot: expected * * model.pt and {} element names (or NULL), got {} "
               "arguments", ntypes, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for mlpot must start with * * (one line for all types)");
  load_model(arg[2]);
  type_species.assign(ntypes + 1, -1);
  for (int t = 1; t <= ntypes; t++) {
    const std::string name = arg[2 + t];
    if (name == "NULL") continue;    // atoms of this type are left to other pair styles
    int found = -1;
    for (std::size_t k = 0; k < model_elements.size(); k++)
      if (model_elements[k] == name) found = (int) k;
    if (found < 0) {
      std::string known;
      for (const auto &e : model_elements) known += " " + e;
      error->all(FLERR, "pair_coeff for mlpot: element {} (type {}) is not in the model (elements:{})", name, t,
                 known);
    }
    type_species[t] = found;
  }
  int count = 0;
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) {
      setflag[i][j] = (type_species[i] >= 0 && type_species[j] >= 0) ? 1 : 0;
      count += setflag[i][j];
    }
  if (count == 0) error->all(FLERR, "pair_coeff for mlpot: no atom type is mapped to an element");
}

void PairMLPot::load_model(const std::string &path)
{
  torch::jit::ExtraFilesMap extra{{"mlpot_export.json", ""}};
  try {
    // Loaded onto the device it was exported for: the traced graph holds constants there.
    module = torch::jit::load(path, c10::nullopt, extra);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair mlpot: cannot load {} as a TorchScript model: {}", path, e.what());
  }
  if (!module.find_method("forward_lammps"))
    error->all(FLERR, "pair mlpot: {} has no forward_lammps method; export it again with this mlpot "
               "(mlpot export MODEL {})", path, path);
  module.eval();
  model_elements.clear();
  for (const auto &e : module.attr("elements").toListRef()) model_elements.push_back(e.toStringRef());
  cutoff = module.attr("cutoff").toDouble();
  device = module.attr("species_of_number").toTensor().device();
  model_dtype = json_string(extra["mlpot_export.json"], "dtype");
  if (nthreads > 0) at::set_num_threads(nthreads);
  if (comm->me == 0) {
    std::string names;
    for (const auto &e : model_elements) names += (names.empty() ? "" : " ") + e;
    utils::logmesg(lmp, "pair mlpot: {} (elements {}; cutoff {} A; {}; {}; {} torch threads per rank)\n", path,
                   names, cutoff, model_dtype, device.str(), at::get_num_threads());
  }
}

void PairMLPot::init_style()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style mlpot needs units metal (the model is in Å and eV)");
  if (type_species.empty()) error->all(FLERR, "pair_style mlpot: pair_coeff * * model.pt ... is missing");
  // A full list: every neighbour of each local atom, ghosts included, since an atom's
  // energy depends on all its neighbours (and their angles).
  neighbor->add_request(this, NeighConst::REQ_FULL);
  if (force->newton_pair == 0 && comm->me == 0)
    utils::logmesg(lmp, "pair mlpot: newton pair off: forces on ghost atoms are summed onto their owners "
                   "by the pair style's own reverse communication\n");
}

/* The model's cutoff: LAMMPS then keeps ghosts out to cutoff + skin, which the descriptor of
   every local atom needs (domain decomposition through ghosts needs nothing more). */
double PairMLPot::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "pair mlpot: all pair coeffs are not set");
  return cutoff;
}

/* Model inputs from the full neighbour list: rows 0..n_local_rows-1 are the local centres
   (in list order, so edges come out sorted by centre), then the ghosts (and any non-centre
   atoms) that are neighbours within the cutoff, in order of first use. Pairs beyond the
   model's cutoff (the skin) are dropped here. Returns the number of pairs P. */
int PairMLPot::build_inputs(int &n_local_rows)
{
  double **x = atom->x;
  const int *type = atom->type;
  const int nall = atom->nlocal + atom->nghost;
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  const double cutsq_model = cutoff * cutoff;

  compact.assign(nall, -1);
  row_atom.clear();
  for (int ii = 0; ii < inum; ii++) {
    const int i = ilist[ii];
    if (type_species[type[i]] < 0) continue;
    compact[i] = (int) row_atom.size();
    row_atom.push_back(i);
  }
  n_local_rows = (int) row_atom.size();
  std::vector<int64_t> centre, neighbour;
  centre.reserve(edges.size() / 2 + 16);
  neighbour.reserve(edges.size() / 2 + 16);
  for (int ii = 0; ii < inum; ii++) {
    const int i = ilist[ii];
    const int ci = compact[i];
    if (ci < 0 || ci >= n_local_rows) continue;
    const int *jlist = firstneigh[i];
    for (int jj = 0; jj < numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      if (type_species[type[j]] < 0) continue;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz >= cutsq_model) continue;
      if (compact[j] < 0) {
        compact[j] = (int) row_atom.size();
        row_atom.push_back(j);
      }
      centre.push_back(ci);
      neighbour.push_back(compact[j]);
    }
  }
  const std::size_t rows = row_atom.size(), pairs = centre.size();
  positions.resize(3 * rows);
  species.resize(rows);
  for (std::size_t r = 0; r < rows; r++) {
    const int k = row_atom[r];
    for (int d = 0; d < 3; d++) positions[3 * r + d] = x[k][d];
    species[r] = type_species[type[k]];
  }
  edges.resize(2 * pairs);
  std::copy(centre.begin(), centre.end(), edges.begin());
  std::copy(neighbour.begin(), neighbour.end(), edges.begin() + pairs);
  return (int) pairs;
}

void PairMLPot::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  int n_local_rows = 0;
  const int64_t pairs = build_inputs(n_local_rows);
  const int64_t rows = (int64_t) row_atom.size();
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  // from_blob wraps the buffers without copying; .to(device) copies only for a GPU model.
  std::vector<torch::jit::IValue> inputs{torch::from_blob(positions.data(), {rows, 3}, f64).to(device),
                                         torch::from_blob(species.data(), {rows}, i64).to(device),
                                         torch::from_blob(edges.data(), {2, pairs}, i64).to(device),
                                         (int64_t) n_local_rows};
  c10::IValue result;
  try {
    result = module.get_method("forward_lammps")(inputs);
  } catch (const std::exception &e) {
    error->one(FLERR, "pair mlpot: the model failed: {}", e.what());
  }
  const auto out = result.toGenericDict();
  auto get = [&out](const char *key) {
    return out.at(key).toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
  };
  tally(get("atomic_energies"), get("forces"), get("virial"), get("pair_gradients"), n_local_rows);
}

/* Energies, forces and virials into LAMMPS's arrays. newton on: forces on ghosts go into f
   and LAMMPS sums them onto their owners. newton off: LAMMPS would drop them, so they are
   summed here through a reverse communication of our own. */
void PairMLPot::tally(const torch::Tensor &energies, const torch::Tensor &forces, const torch::Tensor &model_virial,
                      const torch::Tensor &pair_gradients, int n_local_rows)
{
  const double *e = energies.data_ptr<double>();
  const double *fm = forces.data_ptr<double>();
  const double *w = model_virial.data_ptr<double>();
  double **f = atom->f;
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  const int rows = (int) row_atom.size();

  for (int r = 0; r < n_local_rows; r++) {
    if (eflag_global) eng_vdwl += e[r];
    if (eflag_atom) eatom[row_atom[r]] += e[r];
  }
  if (vflag_global) {
    // W = -sum_p r_p (x) dE/dr_p is symmetric up to rounding; LAMMPS keeps one off-diagonal.
    virial[0] += w[0];
    virial[1] += w[4];
    virial[2] += w[8];
    virial[3] += 0.5 * (w[1] + w[3]);
    virial[4] += 0.5 * (w[2] + w[6]);
    virial[5] += 0.5 * (w[5] + w[7]);
  }
  if (force->newton_pair) {
    for (int r = 0; r < rows; r++)
      for (int d = 0; d < 3; d++) f[row_atom[r]][d] += fm[3 * r + d];
    if (vflag_atom) tally_atom_virial(pair_gradients, nullptr, 0);
    return;
  }
  reverse_buffer.assign((std::size_t) nall * REVERSE_STRIDE, 0.0);
  for (int r = 0; r < rows; r++)
    for (int d = 0; d < 3; d++) reverse_buffer[(std::size_t) row_atom[r] * REVERSE_STRIDE + d] = fm[3 * r + d];
  if (vflag_atom) tally_atom_virial(pair_gradients, reverse_buffer.data(), REVERSE_STRIDE);
  comm->reverse_comm(this);
  for (int i = 0; i < nlocal; i++) {
    const double *b = &reverse_buffer[(std::size_t) i * REVERSE_STRIDE];
    for (int d = 0; d < 3; d++) f[i][d] += b[d];
    if (vflag_atom)
      for (int k = 0; k < 6; k++) vatom[i][k] += b[3 + k];
  }
}

/* Per-atom virial: pair p's share -r_p (x) dE/dr_p split evenly between its two atoms, into
   vatom (newton on; LAMMPS's per-atom computes sum the ghosts' shares onto owners) or into
   the reverse-communication buffer at offset 3 (newton off). */
void PairMLPot::tally_atom_virial(const torch::Tensor &pair_gradients, double *accumulate, int stride)
{
  const double *g = pair_gradients.data_ptr<double>();
  const std::size_t pairs = edges.size() / 2;
  for (std::size_t p = 0; p < pairs; p++) {
    const int64_t ri = edges[p], rj = edges[pairs + p];
    double r[3], v[6];
    for (int d = 0; d < 3; d++) r[d] = positions[3 * rj + d] - positions[3 * ri + d];
    const double *gp = g + 3 * p;
    v[0] = -0.5 * r[0] * gp[0];
    v[1] = -0.5 * r[1] * gp[1];
    v[2] = -0.5 * r[2] * gp[2];
    v[3] = -0.25 * (r[0] * gp[1] + r[1] * gp[0]);
    v[4] = -0.25 * (r[0] * gp[2] + r[2] * gp[0]);
    v[5] = -0.25 * (r[1] * gp[2] + r[2] * gp[1]);
    for (const int64_t row : {ri, rj}) {
      const int atom_index = row_atom[row];
      double *target = accumulate ? accumulate + (std::size_t) atom_index * stride + 3 : vatom[atom_index];
      for (int k = 0; k < 6; k++) target[k] += v[k];
    }
  }
}

int PairMLPot::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int i = first; i < first + n; i++)
    for (int k = 0; k < REVERSE_STRIDE; k++) buf[m++] = reverse_buffer[(std::size_t) i * REVERSE_STRIDE + k];
  return m;
}

void PairMLPot::unpack_reverse_comm(int n, int *list, double *buf)
{
  int m = 0;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < REVERSE_STRIDE; k++) reverse_buffer[(std::size_t) list[i] * REVERSE_STRIDE + k] += buf[m++];
}
