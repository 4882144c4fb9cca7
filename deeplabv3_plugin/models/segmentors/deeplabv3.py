"""The DeepLabV3 segmentor: mmseg's ``EncoderDecoder`` that owns the model's output stride."""
import copy
from typing import List, Optional

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import ConfigType

from ..output_stride import OutputStrideSwitchable

PARTS = ('backbone', 'decode_head')


def _follows_output_stride(cfg: ConfigType) -> bool:
    kind = cfg.get('type')
    kind = MODELS.get(kind) if isinstance(kind, str) else kind
    return isinstance(kind, type) and issubclass(kind, OutputStrideSwitchable)


@MODELS.register_module()
class DeepLabV3(EncoderDecoder, OutputStrideSwitchable):
    """``EncoderDecoder`` whose output stride is one knob for the whole model (Sec. 3, 4.1).

    The paper trains at OS 16 and evaluates the same weights at OS 8, which changes the
    backbone's strides and rates *and* doubles the ASPP rates (Tables 4, 6). The segmentor owns
    both values: it builds its ``OutputStrideSwitchable`` parts (``MultiGridResNet``,
    ``DeepLabV3Head``) at ``output_stride``, and they run at ``test_output_stride`` (if set) in
    eval mode, as mmengine's val and test loops call ``eval()``. ``tools/test.py --output-stride
    8`` sets the latter.

    Args:
        output_stride (int): training OS, given to the backbone and the head; their own configs
            may omit it or repeat it.
        test_output_stride (int | None): eval OS; None evaluates at the training OS.
    """

    def __init__(self,
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 output_stride: int = 16,
                 test_output_stride: Optional[int] = None,
                 **kwargs) -> None:
        parts = dict(backbone=backbone, decode_head=decode_head)
        followers = [name for name in PARTS if _follows_output_stride(parts[name])]
        if not followers:
            raise ValueError(
                f'DeepLabV3: neither backbone {backbone.get("type")!r} nor decode_head '
                f'{decode_head.get("type")!r} follows an output stride; use MultiGridResNet or '
                "DeepLabV3Head, or mmseg's EncoderDecoder for a model without the knob.")
        for name in followers:
            given = parts[name].get('output_stride', output_stride)
            if given != output_stride:
                raise ValueError(
                    f'DeepLabV3: {name}.output_stride={given!r} differs from '
                    f'output_stride={output_stride!r}; the segmentor owns the output stride: set '
                    'model.output_stride only.')
            parts[name] = copy.deepcopy(parts[name])
            parts[name]['output_stride'] = output_stride
        super().__init__(**parts, **kwargs)
        self.output_stride = output_stride
        self._test_output_stride = None
        self.test_output_stride = test_output_stride

    def _followers(self) -> List[OutputStrideSwitchable]:
        return [
            m for m in self.modules() if m is not self and isinstance(m, OutputStrideSwitchable)
        ]

    @property
    def current_output_stride(self) -> int:
        """The OS of the current mode: the test OS in eval mode, if set."""
        if not self.training and self._test_output_stride is not None:
            return self._test_output_stride
        return self.output_stride

    @property
    def test_output_stride(self) -> Optional[int]:
        return self._test_output_stride

    @test_output_stride.setter
    def test_output_stride(self, value: Optional[int]) -> None:
        if value is not None:
            try:
                self.validate_output_stride(value)
            except ValueError as error:
                raise ValueError(
                    f'DeepLabV3: test_output_stride={value} was rejected: {error}') from error
        self._test_output_stride = value
        self.train(self.training)  # the output stride of the current mode

    def validate_output_stride(self, output_stride: int) -> None:
        for module in self._followers():
            module.validate_output_stride(output_stride)

    def switch_output_stride(self, output_stride: int) -> None:
        """Evaluate at ``output_stride`` (``set_output_stride``); training keeps its own."""
        self.test_output_stride = output_stride

    def train(self, mode: bool = True) -> 'DeepLabV3':
        """Set the mode and bring every part to its output stride."""
        super().train(mode)
        target = self.current_output_stride
        for module in self._followers():
            if module.current_output_stride != target:
                module.switch_output_stride(target)
        return self
