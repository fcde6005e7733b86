"""Two Conv2d -> BatchNorm2d -> ReLU blocks and a residual add, in eval: what inductor freezing folds (CD120)."""
import torch
from torch import nn


class ConvBnBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + y)


def get_model():
    torch.manual_seed(0)
    model = ConvBnBlocks()
    with torch.no_grad():  # batch statistics other than the defaults, so that folding them changes the weights
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return model


def get_inputs(batch_size=2):
    torch.manual_seed(1)
    return torch.randn(batch_size, 3, 24, 24)
