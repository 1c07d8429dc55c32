"""The package layout: the library never imports the trainer (nor its dependencies), and
everything public is exported from the package root."""

import importlib
import inspect
import pkgutil
import subprocess
import sys

import infonce

LIBRARY = sorted(
    m.name
    for m in pkgutil.walk_packages(infonce.__path__, "infonce.")
    if not m.name.startswith("infonce.trainer") and not m.name.endswith("__main__")
)
# the library modules whose public names make up infonce.__all__ (the plot package has its
# own; _private modules have none)
API_MODULES = sorted(
    name
    for name in LIBRARY
    if not name.startswith("infonce.plot") and not name.rsplit(".", 1)[1].startswith("_")
)
BLOCKED = ("infonce.trainer", "lightning", "pytorch_lightning", "lightning_fabric",
           "torchvision", "jsonargparse", "matplotlib")  # fmt: skip


def test_every_library_module_imports_without_the_trainer_or_its_dependencies():
    """In a fresh interpreter where importing any of BLOCKED raises ImportError (as if not
    installed), every library module imports, and none of BLOCKED is loaded."""
    code = (
        "import importlib, importlib.abc, sys\n"
        f"BLOCKED = {BLOCKED!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if any(name == b or name.startswith(b + '.') for b in BLOCKED):\n"
        "            raise ImportError(f'{name} is blocked: the library must not need it')\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {LIBRARY!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if any(m == b or m.startswith(b + '.') "
        "for b in BLOCKED)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert "infonce.plot.temperature" in LIBRARY and "infonce.contrastive" in LIBRARY


def test_the_blocking_finder_would_catch_a_library_module_importing_the_trainer():
    """The check above is not vacuous: the same finder makes importing the trainer fail."""
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'lightning' or name.startswith('lightning.'):\n"
        "            raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import infonce.trainer.moco\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "blocked" in result.stderr


def test_every_trainer_module_imports():
    trainer = importlib.import_module("infonce.trainer")
    names = sorted(
        m.name
        for m in pkgutil.walk_packages(trainer.__path__, "infonce.trainer.")
        if not m.name.endswith("__main__")
    )
    assert "infonce.trainer.moco" in names
    for name in names:
        importlib.import_module(name)


def test_every_name_in_all_is_importable_from_the_package_root():
    for name in infonce.__all__:
        assert getattr(infonce, name) is not None, name
    assert infonce.load_backbone.__module__ == "infonce.trainer.export"  # the one lazy bridge


def _public_definitions(module) -> set[str]:
    """Functions and classes defined in ``module`` (not imported) whose names are public."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    }


def test_every_public_function_and_class_is_in_its_modules_all_and_the_roots():
    assert "infonce.knn" in API_MODULES and "infonce._checks" not in API_MODULES
    for name in API_MODULES:
        module = importlib.import_module(name)
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        public = _public_definitions(module)
        assert public <= set(module.__all__), f"{name}: {sorted(public - set(module.__all__))}"
        assert set(module.__all__) <= set(infonce.__all__), name
        for exported in module.__all__:
            assert getattr(infonce, exported) is getattr(module, exported), (name, exported)


def test_the_roots_all_is_exactly_the_union_of_the_modules_all():
    union = set()
    for name in API_MODULES:
        union |= set(importlib.import_module(name).__all__)
    assert set(infonce.__all__) == union | {"load_backbone"}
    assert len(infonce.__all__) == len(set(infonce.__all__))  # no duplicates
    assert "__version__" not in infonce.__all__


PLOT_MODULES = sorted(
    name
    for name in LIBRARY
    if name.startswith("infonce.plot.") and not name.rsplit(".", 1)[1].startswith("_")
)


def test_every_public_plot_function_is_in_its_modules_all_and_the_plot_packages():
    """The plot package has its own root: the same both-ways check as for infonce."""
    import infonce.plot

    assert PLOT_MODULES == ["infonce.plot.cli", "infonce.plot.curves", "infonce.plot.temperature"]
    union = set()
    for name in PLOT_MODULES:
        module = importlib.import_module(name)
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        public = _public_definitions(module)
        assert public <= set(module.__all__), f"{name}: {sorted(public - set(module.__all__))}"
        for exported in module.__all__:
            assert getattr(infonce.plot, exported) is getattr(module, exported), (name, exported)
        union |= set(module.__all__)
    assert set(infonce.plot.__all__) == union
    assert len(infonce.plot.__all__) == len(union)  # no duplicates
    assert "check_logits_and_labels" in union


def test_a_torch_only_install_trains_a_loss_and_load_backbone_says_what_to_install():
    """pyproject: the library depends on torch alone; without the trainer's packages the losses
    still run and ``infonce.load_backbone`` names the extra to install."""
    from pathlib import Path

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["torch"]
    assert {"trainer", "plot", "dev"} <= set(project["optional-dependencies"])
    code = (
        "import importlib.abc, sys\n"
        f"BLOCKED = {BLOCKED!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if any(name == b or name.startswith(b + '.') for b in BLOCKED):\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch, infonce\n"
        "q, k = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)\n"
        "infonce.info_nce(q, k, infonce.MemoryQueue(16, 8).negatives()).backward()\n"
        "try:\n"
        "    infonce.load_backbone\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "infonce.load_backbone needs the trainer's packages" in result.stdout
    assert 'pip install "infonce[trainer]"' in result.stdout
