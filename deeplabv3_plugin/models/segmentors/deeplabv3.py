"""The DeepLabV3 segmentor: mmseg's ``EncoderDecoder`` with one output-stride knob."""
from typing import Optional

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

from ..utils.output_stride import OutputStrideSwitchable


@MODELS.register_module()
class DeepLabV3(EncoderDecoder):
    """``EncoderDecoder`` whose output stride is one knob for the whole model (Sec. 3, 4.1).

    The paper trains at OS 16 and evaluates the same weights at OS 8, which changes the
    backbone's strides and rates *and* doubles the ASPP rates (Tables 4, 6). Every
    ``OutputStrideSwitchable`` submodule (``MultiGridResNet``, ``DeepLabV3Head``) follows:
    ``output_stride`` in train mode, ``test_output_stride`` (if set) in eval mode, as mmengine's
    val and test loops call ``eval()``. ``tools/test.py --output-stride 8`` sets the latter.

    Args:
        output_stride (int | None): training OS; None keeps the submodules' own (equal) values.
        test_output_stride (int | None): eval OS; None evaluates at the training OS.
    """

    def __init__(self,
                 output_stride: Optional[int] = None,
                 test_output_stride: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if output_stride is None:
            found = {
                name: module.current_output_stride
                for name, module in self.named_modules()
                if isinstance(module, OutputStrideSwitchable)
            }
            if len(set(found.values())) > 1:
                raise ValueError(
                    'DeepLabV3: the submodules run at different output strides (' +
                    ', '.join(f'{name}={value}' for name, value in found.items()) +
                    '); set DeepLabV3(output_stride=...) to give the whole model one value.')
            output_stride = next(iter(found.values()), None)
        self.output_stride = output_stride
        self._test_output_stride = None
        self.test_output_stride = test_output_stride  # validates both and applies one

    @property
    def test_output_stride(self) -> Optional[int]:
        return self._test_output_stride

    @test_output_stride.setter
    def test_output_stride(self, value: Optional[int]) -> None:
        if value is not None and self.output_stride is None:
            raise ValueError(f'DeepLabV3: test_output_stride={value} needs a training output '
                             'stride to return to in train mode; set DeepLabV3(output_stride=...).')
        try:
            if value is not None:
                self._switch(value, 'test_output_stride')  # rejected here, not at eval()
            self._test_output_stride = value
        finally:
            self.train(self.training)  # the output stride of the current mode

    def _switch(self, output_stride: int, name: str) -> None:
        modules = [m for m in self.modules() if isinstance(m, OutputStrideSwitchable)]
        if not modules:
            raise ValueError(f'DeepLabV3: {name}={output_stride} cannot be applied: no submodule '
                             f'is OutputStrideSwitchable; use a backbone such as MultiGridResNet.')
        try:
            for module in modules:
                module.switch_output_stride(output_stride)
        except ValueError as error:
            raise ValueError(f'DeepLabV3: {name}={output_stride} was rejected: {error}') from error

    def train(self, mode: bool = True) -> 'DeepLabV3':
        """Set the mode and switch to its output stride: the test OS in eval, if set."""
        super().train(mode)
        if not mode and self.test_output_stride is not None:
            self._switch(self.test_output_stride, 'test_output_stride')
        elif self.output_stride is not None:
            self._switch(self.output_stride, 'output_stride')
        return self
