"""Train MoCo v2, SimCLR, MoCo v3, SupCon or a linear probe with LightningCLI (see
infonce/trainer/cli.py and configs/).

python train.py fit --config configs/cpu_quick.yaml --data.dataset folder --data.root DIR
python train.py validate --config configs/cpu_quick.yaml --ckpt_path last
python train.py fit --config configs/linear_probe.yaml --model.pretrained CKPT
python train.py fit --print_config --config configs/moco_cifar10.yaml
"""

from infonce.trainer.cli import main

if __name__ == "__main__":
    main()
