"""The DeepLabV3 segmentor: mmseg's ``EncoderDecoder`` with one output-stride knob."""
from typing import List, Optional

import torch.nn as nn
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS


def _check_power_of_two(value: int, name: str) -> int:
    """Reject a non-integer or non-power-of-two output stride, naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(f'DeepLabV3: {name}={value!r} is not allowed: expected a power of two '
                         f'such as 8, 16 or 32 (or None).')
    return value


@MODELS.register_module()
class DeepLabV3(EncoderDecoder):
    """``EncoderDecoder`` whose output stride is one knob for the whole model (Sec. 3, 4.1).

    The paper trains at output stride (OS) 16 and evaluates the same weights at OS 8, which
    changes the backbone's strides and rates *and* doubles the ASPP rates (Table 4, Table 6);
    forgetting the second half is a common mistake. Here every submodule that defines
    ``set_output_stride(output_stride)`` (``MultiGridResNet``, ``DeepLabV3Head``) follows one value:

    * ``output_stride`` (the training OS) is pushed to all of them at construction; when it is
      None, each keeps its own configured value, and they must agree.
    * ``test_output_stride`` is applied whenever the model is put in eval mode (``.eval()`` /
      ``.train(False)``, as mmengine's val and test loops do) and the training OS comes back with
      ``.train()``. ``tools/test.py --output-stride 8`` sets it on a built model.

    Only conv strides, rates and paddings change, never a parameter or buffer, so a checkpoint
    loads and runs at every OS.

    Args:
        output_stride (int | None): Training output stride of the whole model, e.g. 16 (stage 1)
            or 8 (stage 2). None keeps the submodules' own values. Default: None.
        test_output_stride (int | None): Output stride used in eval mode, e.g. 8; None evaluates
            at the training OS. Default: None.
        **kwargs: ``EncoderDecoder`` arguments (``backbone``, ``decode_head``,
            ``auxiliary_head``, ``train_cfg``, ``test_cfg``, ``data_preprocessor`` ...).

    Raises:
        ValueError: If an output stride is not a power of two or is rejected by a submodule,
            if one is given but no submodule defines ``set_output_stride``, or if
            ``output_stride`` is None and the submodules' configured output strides differ.

    Example:
        >>> model = MODELS.build(dict(type='DeepLabV3', output_stride=16,
        ...                           test_output_stride=8, backbone=..., decode_head=...))
        >>> model.eval()   # backbone and head now at OS 8
        >>> model.train()  # back to OS 16
    """

    def __init__(self,
                 output_stride: Optional[int] = None,
                 test_output_stride: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if output_stride is None:
            self._output_stride = self._configured_output_stride()
        else:
            self.set_output_stride(output_stride)
        self._applied_output_stride = self._output_stride
        self._test_output_stride: Optional[int] = None
        self.test_output_stride = test_output_stride

    def _stride_modules(self) -> List[nn.Module]:
        """Every submodule (not the segmentor itself) that defines ``set_output_stride``."""
        return [
            module for module in self.modules()
            if module is not self and callable(getattr(module, 'set_output_stride', None))
        ]

    def _configured_output_stride(self) -> Optional[int]:
        """The output stride the submodules were built with; they must agree."""
        values = {
            name: module.output_stride
            for name, module in self.named_modules()
            if module is not self and callable(getattr(module, 'set_output_stride', None))
            and getattr(module, 'output_stride', None) is not None
        }
        if len(set(values.values())) > 1:
            found = ', '.join(f'{name}.output_stride={value}' for name, value in values.items())
            raise ValueError(
                f'DeepLabV3: the submodules are configured for different output strides '
                f'({found}); set DeepLabV3(output_stride=...) to give the whole model one value.')
        return next(iter(values.values()), None)

    def _apply_output_stride(self, output_stride: int, name: str) -> None:
        """Push ``output_stride`` to every OS-dependent submodule, naming the argument on error."""
        modules = self._stride_modules()
        if not modules:
            raise ValueError(
                f'DeepLabV3: {name}={output_stride} cannot be applied: no submodule defines '
                f'set_output_stride(output_stride); use a backbone such as MultiGridResNet.')
        try:
            for module in modules:
                module.set_output_stride(output_stride)
        except ValueError as error:
            previous = getattr(self, '_applied_output_stride', None)
            if previous is not None:  # undo the modules that accepted the value
                for module in modules:
                    module.set_output_stride(previous)
            raise ValueError(f'DeepLabV3: {name}={output_stride} was rejected: {error}') from error
        self._applied_output_stride = output_stride

    @property
    def output_stride(self) -> Optional[int]:
        """The training output stride (None if no submodule reports one)."""
        return self._output_stride

    @property
    def test_output_stride(self) -> Optional[int]:
        """The output stride applied in eval mode; None means the training output stride."""
        return self._test_output_stride

    @test_output_stride.setter
    def test_output_stride(self, value: Optional[int]) -> None:
        if value is not None:
            _check_power_of_two(value, 'test_output_stride')
            if not self._stride_modules():
                self._apply_output_stride(value, 'test_output_stride')  # raises, naming it
            if self._output_stride is None:
                raise ValueError(
                    f'DeepLabV3: test_output_stride={value} needs a training output stride to '
                    f'return to in train mode; set DeepLabV3(output_stride=...).')
            # Validate against every submodule now rather than at the first .eval().
            self._apply_output_stride(value, 'test_output_stride')
            self._apply_output_stride(self._output_stride, 'output_stride')
        self._test_output_stride = value
        self._sync_output_stride()

    def set_output_stride(self, output_stride: int) -> None:
        """Set the training output stride of the whole model (and apply it unless in eval mode
        with a ``test_output_stride``).

        Args:
            output_stride (int): The new output stride, e.g. 16 or 8.

        Raises:
            ValueError: If the value is not a power of two or a submodule rejects it.
        """
        _check_power_of_two(output_stride, 'output_stride')
        self._apply_output_stride(output_stride, 'output_stride')
        self._output_stride = output_stride
        self._sync_output_stride()

    def _sync_output_stride(self) -> None:
        """Apply the OS that the current mode calls for: the test OS in eval mode, else the
        training OS.

        Applied every time (a fraction of a millisecond: attribute writes on the convs), not only
        when it changed, so a submodule switched behind the segmentor's back, e.g. by
        ``set_output_stride(model.backbone, 8)``, is brought back in line by the next mode change.
        """
        if not hasattr(self, '_test_output_stride'):
            return  # still in __init__
        wanted = self._output_stride
        if not self.training and self._test_output_stride is not None:
            wanted = self._test_output_stride
        if wanted is not None:
            self._apply_output_stride(wanted, 'output_stride')

    def train(self, mode: bool = True) -> 'DeepLabV3':
        """Set train/eval mode and switch to the training or test output stride accordingly."""
        super().train(mode)
        self._sync_output_stride()
        return self
