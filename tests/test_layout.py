"""The package layout: the library never imports the trainer, and everything public is exported."""

import pkgutil
import subprocess
import sys

import infonce

LIBRARY = sorted(
    m.name
    for m in pkgutil.walk_packages(infonce.__path__, "infonce.")
    if not m.name.startswith("infonce.trainer") and not m.name.endswith("__main__")
)


def test_importing_every_library_module_loads_neither_the_trainer_nor_lightning():
    code = (
        "import importlib, sys\n"
        f"for name in {LIBRARY!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('infonce.trainer', 'lightning'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert "infonce.plot.temperature" in LIBRARY and "infonce.contrastive" in LIBRARY


def test_every_name_in_all_is_importable_from_the_package_root():
    for name in infonce.__all__:
        assert getattr(infonce, name) is not None, name
    assert infonce.load_backbone.__module__ == "infonce.trainer.export"  # the one lazy bridge
