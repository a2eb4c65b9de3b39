"""One plain nn.Module per architecture; no Lightning here. Pick one with `model=<name>` (conf/model/<name>.yaml)."""

from digits.models.alexnet import AlexNet
from digits.models.ann import ANN
from digits.models.deotte import DeotteCNN
from digits.models.init import INIT_SCHEMES, apply_init
from digits.models.lenet import LeNet5
from digits.models.original import OriginalCNN

ARCHITECTURES = (OriginalCNN, LeNet5, AlexNet, ANN, DeotteCNN)  # what a checkpoint's model config may name

__all__ = ["ANN", "ARCHITECTURES", "INIT_SCHEMES", "AlexNet", "DeotteCNN", "LeNet5", "OriginalCNN", "apply_init"]
