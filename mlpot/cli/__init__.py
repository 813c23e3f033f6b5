"""The ``mlpot`` command line: thin commands that parse, load and call the library."""

from __future__ import annotations

import argparse
import sys

from . import ablate, convert, describe, evaluate, export_n2p2, import_n2p2, info, md, report, search, train
from . import export, lammps_plugin

COMMANDS = {"train": train, "evaluate": evaluate, "md": md, "info": info, "convert": convert,
            "describe": describe, "ablate": ablate, "search": search, "report": report,
            "import-n2p2": import_n2p2, "export-n2p2": export_n2p2}
COMMANDS["export"] = export
COMMANDS["lammps-plugin"] = lammps_plugin


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="mlpot", description="Behler–Parrinello ML potentials")
    parser.add_argument("--version", action="version", version=f"mlpot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        cmd = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input, with a one-line reason)."""
    from ..data import DataError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (DataError, ValueError, OSError) as exc:  # OSError: missing, unreadable, a folder, ...
        print(f"mlpot {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlpot {args.command}: interrupted", file=sys.stderr)
        return 130


def entry_point() -> int:
    """The ``mlpot`` console command: :func:`main` in a process whose allocator keeps large
    blocks in the heap (:func:`mlpot.allocator.tune_cpu_allocator`; 2x faster CPU training
    on the mlearn recipe)."""
    from ..allocator import tune_cpu_allocator

    tune_cpu_allocator()
    return main()


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line.

    A YAML syntax error (the context of the config error that reports it) becomes its
    position and problem; PyYAML's own text draws the bad line with a caret under it."""
    text = str(exc)
    if "\n" not in text:
        return text
    cause = exc.__context__
    mark = getattr(cause, "problem_mark", None)
    if mark is not None:
        head = text.split(" (", 1)[0]  # "PATH: not valid YAML"
        problem = getattr(cause, "problem", None) or getattr(cause, "context", None) or "syntax error"
        return f"{head}: line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
