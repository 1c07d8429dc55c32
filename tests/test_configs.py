"""The configs: each parses (deltas over their base), says each setting once (a method config
restates none of the method's defaults), names its source, and the CPU variants share one
budget."""

import importlib
import inspect

import pytest
import yaml
from train_helpers import REPO

from infonce.trainer.cli import main

CONFIGS = REPO / "configs"
# a delta config and the config it is a delta over
LAYERED = {
    "moco_cifar10_symmetric.yaml": "moco_cifar10.yaml",
    "moco_cifar10_mlp.yaml": "moco_cifar10.yaml",
}
CPU_VARIANTS = ["cpu_quick.yaml", "simclr_cpu_quick.yaml", "moco_v3_cpu_quick.yaml",
                "supcon_cpu_quick.yaml"]  # fmt: skip
RECIPES = ["moco_cifar10.yaml", "simclr_cifar10.yaml", "moco_v3_cifar10.yaml",
           "supcon_cifar10.yaml"]  # fmt: skip


def load(name: str) -> dict:
    return yaml.safe_load(open(CONFIGS / name))


def layers(name: str) -> list[str]:
    return [str(CONFIGS / n) for n in ([LAYERED[name]] if name in LAYERED else []) + [name]]


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_parses_with_its_base(name, capsys):
    args = ["fit"] + [a for path in layers(name) for a in ("--config", path)]
    with pytest.raises(SystemExit) as exit:
        main([*args, "--print_config"])
    assert exit.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["default_root_dir"] == f"runs/{name.removesuffix('.yaml')}"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_names_its_source_or_says_it_has_none(name):
    header = "".join(line for line in open(CONFIGS / name) if line.startswith("#"))
    assert (
        "Published:" in header
        or "Not a published recipe" in header
        or (name in ("linear_probe.yaml", "moco_v1_imagenet_defaults.yaml"))
    )
    assert "python train.py" in header  # the command that runs it


@pytest.mark.parametrize("name", RECIPES)
def test_a_method_recipe_restates_none_of_the_methods_defaults(name):
    """The method's defaults are the published recipe: said once, in its class."""
    model = load(name)["model"]
    module, cls = model["class_path"].rsplit(".", 1)
    method = getattr(importlib.import_module(module), cls)
    defaults = {}
    for klass in reversed(method.__mro__):
        if "__init__" in vars(klass):
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.default is not inspect.Parameter.empty:
                    defaults[p.name] = p.default
    for key, value in (model.get("init_args") or {}).items():
        assert defaults.get(key) != value, f"{name} restates {key}: {value}"


def test_the_cpu_variants_share_one_budget():
    """Backbone, batch, data, precision and seed of cpu_quick.yaml for every method; the epochs
    are each method's share of the same ten minutes, and the last epoch is always evaluated
    (the table's figure), as is the middle one."""

    def budget(config: dict) -> tuple:
        model = config["model"].get("init_args", {})
        trainer = config["trainer"]
        return (
            model.get("backbone"), model.get("bn_splits"), config["data"]["batch_size"],
            config["data"]["dataset"], trainer["accelerator"], trainer["precision"],
            config["seed_everything"],
        )  # fmt: skip

    budgets = {name: budget(load(name)) for name in CPU_VARIANTS}
    assert len(set(budgets.values())) == 1, budgets
    for name in CPU_VARIANTS:
        trainer = load(name)["trainer"]
        assert trainer["max_epochs"] == 2 * trainer["check_val_every_n_epoch"], name
