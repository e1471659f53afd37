"""The training optimiser, without ``torch._dynamo`` when nothing is compiled.

torch.optim marks its optimisers' methods for TorchDynamo to skip (``torch._disable_dynamo``, and the grad
mode wrapper of ``step``), and those markers import ``torch._dynamo`` on their first call: about 1 CPU-second
in every training process, although an eager run never meets Dynamo. :class:`EagerSGD` calls the same methods
with those markers peeled off, so its updates and its state dict are the SGD ones, bit for bit.
"""

from __future__ import annotations

import inspect

import torch

_OPTIMIZER = torch.optim.Optimizer


class EagerSGD(torch.optim.SGD):
    """``torch.optim.SGD`` without Dynamo's markers; for an eager model only (a compiled region that called
    these methods would trace into them)."""

    add_param_group = inspect.unwrap(_OPTIMIZER.add_param_group)
    zero_grad = inspect.unwrap(_OPTIMIZER.zero_grad)
    state_dict = inspect.unwrap(_OPTIMIZER.state_dict)
    load_state_dict = inspect.unwrap(_OPTIMIZER.load_state_dict)

    @torch.no_grad()  # what SGD's own wrapper sets for a non-differentiable optimiser
    def step(self, closure=None):
        return inspect.unwrap(torch.optim.SGD.step)(self, closure)


def sgd(params, compiled: bool, **settings) -> torch.optim.SGD:
    """SGD over ``params``: torch's own where a model is compiled (Dynamo must see its markers), else
    :class:`EagerSGD`."""
    return (torch.optim.SGD if compiled else EagerSGD)(params, **settings)
