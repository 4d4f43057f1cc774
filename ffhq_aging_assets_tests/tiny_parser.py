"""A face parser small enough to compile ahead of time on a CPU in a test."""

import torch


class TinyParser(torch.nn.Module):
    """A face parser in miniature: convolution, GroupNorm, ReLU, 19 logits at the input's size.

    The same kinds of layer as the DeepLab, small enough to compile ahead of time on a CPU in
    a test; seeded, so every process builds the same weights.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.GroupNorm(4, 8)
        self.classifier = torch.nn.Conv2d(8, 19, 1)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.norm(self.conv(x))))
