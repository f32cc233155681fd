"""The commands of ``facediff``, one module each (facediff.cli lists them).

Every command module has the same shape: ``NAME`` (the command's word), ``add_parser(commands)``
(its arguments, using the shared groups in ``arguments``) and ``run(args) -> int`` (parse,
call the library, print, return the exit code). A module imports only light modules at the
top, so that building the parser is fast; ``run`` imports what the command needs.
"""
