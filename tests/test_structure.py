"""The package's shape, read from its source (bench/structure.py): what a newcomer relies on
and what every new stage must keep."""

from __future__ import annotations

import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def structure():
    spec = importlib.util.spec_from_file_location("structure", ROOT / "bench" / "structure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["structure"] = module
    spec.loader.exec_module(module)
    return module


def test_config_is_plain_data(structure):
    targets = {e.target for e in structure.imports() if e.module == "facediff.config"}
    assert targets <= {"facediff.errors"}, targets


def test_no_import_cycles(structure):
    assert structure.cycles(structure.imports()) == []


def test_the_cycle_finder_finds_cycles(structure):
    edges = [structure.Import("a", "b", (), 1), structure.Import("b", "c", (), 1),
             structure.Import("c", "a", (), 1), structure.Import("c", "d", (), 1)]
    assert structure.cycles(edges) == [["a", "b", "c"]]


def test_no_module_imports_a_private_name_of_another(structure):
    assert structure.private_imports(structure.imports()) == []


def test_public_functions_take_at_most_four_positional_arguments(structure):
    many = [f"{f.module}.{f.qualname}" for f in structure.functions()
            if structure.is_public(f) and f.positional > 4]
    assert many == []


def test_every_command_module_has_the_same_shape():
    import facediff.commands
    from facediff.cli import COMMANDS

    found = {m.name for m in pkgutil.iter_modules(facediff.commands.__path__)} - {"arguments"}
    listed = {c.__name__.rsplit(".", 1)[1] for c in COMMANDS}
    assert found == listed
    for command in COMMANDS:
        assert isinstance(command.NAME, str)
        assert callable(command.add_parser) and callable(command.run)
    assert len({c.NAME for c in COMMANDS}) == len(COMMANDS)


def test_building_the_parser_imports_neither_torch_nor_diffusers():
    code = ("import sys; import facediff.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_sampling_options_come_from_the_registry(capsys):
    from facediff.cli import main
    from facediff.diffusion.samplers import SAMPLERS

    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = capsys.readouterr().out
    for name in SAMPLERS:
        assert name in text
    for flag in ("--sampler", "--steps", "--seed", "--eta", "--guidance", "--guidance-rescale"):
        assert flag in text
