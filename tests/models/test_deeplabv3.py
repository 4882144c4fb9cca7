"""DeepLabV3 segmentor: one output-stride knob for the whole model, test-time switch (Sec. 4.1)."""
import pytest
import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.structures import PixelData
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

from deeplabv3_plugin.models.segmentors import DeepLabV3
from deeplabv3_plugin.models.output_stride import OutputStrideSwitchable, set_output_stride

NUM_CLASSES = 3


@pytest.fixture(autouse=True, scope='module')
def mmseg_scope():
    # What `default_scope = 'mmseg'` does in a config: the segmentor's data_preprocessor type
    # is looked up in mmseg's registry.
    register_all_modules(init_default_scope=True)


@MODELS.register_module(force=True)
class _OSProbeHead(BaseDecodeHead, OutputStrideSwitchable):
    """A head whose 3x3 atrous conv follows the output stride (rate 6 at OS 16), like ASPP."""

    def __init__(self, output_stride: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.atrous = nn.Conv2d(self.in_channels, self.channels, 3, bias=False)
        self.calls = []
        self.switch_output_stride(output_stride)

    def validate_output_stride(self, output_stride: int) -> None:
        if output_stride not in (8, 16, 32):
            raise ValueError(f'_OSProbeHead: output_stride={output_stride} is not allowed')

    def switch_output_stride(self, output_stride: int) -> None:
        self.validate_output_stride(output_stride)
        rate = 6 * 16 // output_stride
        self.atrous.dilation = (rate, rate)
        self.atrous.padding = (rate, rate)
        self.current_output_stride = output_stride
        self.calls.append(output_stride)

    def forward(self, inputs):
        return self.cls_seg(self.atrous(self._transform_inputs(inputs)))


BACKBONE = dict(type='MultiGridResNet', depth=50, base_channels=4, stem_channels=8,
                multi_grid=(1, 2, 4))
PREPROCESSOR = dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                    std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                    size_divisor=1)


def probe_head(**kwargs):
    head = dict(type='_OSProbeHead', in_channels=128, channels=8, num_classes=NUM_CLASSES,
                in_index=-1, norm_cfg=dict(type='BN'))
    head.update(kwargs)
    return head


def aspp_head():
    return dict(type='ASPPHead', in_channels=128, channels=8, dilations=(1, 6, 12, 18),
                num_classes=NUM_CLASSES, in_index=3, norm_cfg=dict(type='BN'))


def build(backbone=None, decode_head=None, **kwargs):
    cfg = dict(type='DeepLabV3', backbone=dict(backbone or BACKBONE),
               decode_head=decode_head or probe_head(), data_preprocessor=PREPROCESSOR,
               test_cfg=dict(mode='whole'))
    cfg.update(kwargs)
    return MODELS.build(ConfigDict(cfg))  # as a config file's `model` reaches the registry


def batch(model, size=64, n=2):
    samples = []
    for _ in range(n):
        sample = SegDataSample(
            gt_sem_seg=PixelData(data=torch.randint(0, NUM_CLASSES, (1, size, size))))
        sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size),
                                 pad_shape=(size, size)))
        samples.append(sample)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(n)]
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)


def oses(model):
    return model.backbone.current_output_stride, model.decode_head.current_output_stride


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model, before):
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_registered_and_built_from_a_config():
    model = build(output_stride=16)
    assert isinstance(model, DeepLabV3)
    assert model.output_stride == 16 and model.test_output_stride is None


def test_output_stride_is_pushed_to_backbone_and_head():
    model = build(output_stride=8)
    assert model.backbone.current_output_stride == 8
    assert model.decode_head.current_output_stride == 8
    assert model.decode_head.atrous.dilation == (12, 12)
    assert [m.conv2.dilation[0] for m in model.backbone.layer4] == [4, 8, 16]


def test_test_output_stride_applies_in_eval_and_train_restores():
    model = build(output_stride=16, test_output_stride=8)
    before = snapshot(model)
    data = batch(model)
    model.eval()
    assert oses(model) == (8, 8)
    assert model.decode_head.atrous.dilation == (12, 12)
    with torch.no_grad():
        logits_8 = model(data['inputs'], mode='tensor')
        predictions = model(**data, mode='predict')
    assert logits_8.shape == (2, NUM_CLASSES, 8, 8)
    assert predictions[0].pred_sem_seg.data.shape == (1, 64, 64)
    model.train()
    assert oses(model) == (16, 16) and model.decode_head.atrous.dilation == (6, 6)
    model.train(False)
    assert model.backbone.current_output_stride == 8
    model.train()
    assert_same_state(model, before)  # switching never touches a parameter or buffer
    with torch.no_grad():
        logits_16 = model(data['inputs'], mode='tensor')
    assert logits_16.shape == (2, NUM_CLASSES, 4, 4)


def test_test_output_stride_set_after_build_like_tools_test():
    model = build(output_stride=16)
    model.test_output_stride = 8  # what `tools/test.py --output-stride 8` does
    assert model.backbone.current_output_stride == 16  # still training
    model.eval()
    assert model.backbone.current_output_stride == 8
    model.test_output_stride = 32  # in eval mode: applied at once
    assert oses(model) == (32, 32)
    model.test_output_stride = None
    assert model.backbone.current_output_stride == 16


def test_with_mmseg_aspp_head_only_the_backbone_switches():
    model = build(decode_head=aspp_head(), output_stride=16, test_output_stride=8)
    before = snapshot(model)
    data = batch(model, size=48)
    with torch.no_grad():
        logits_8 = model.eval()(data['inputs'], mode='tensor')  # eval: no BN statistic moves
        model.train()
        assert_same_state(model, before)
        logits_16 = model(data['inputs'], mode='tensor')
    assert logits_16.shape[2:] == (3, 3) and logits_8.shape[2:] == (6, 6)


def test_paper_aspp_model_one_knob_moves_backbone_and_head_rates():
    """Table 6: MG(1,2,4) + ASPP(6,12,18) + image pooling, trained at OS 16, evaluated at OS 8."""
    model = build(decode_head=dict(type='DeepLabV3Head', in_channels=128, channels=8,
                                   num_classes=NUM_CLASSES, atrous_rates=(6, 12, 18)),
                  output_stride=16, test_output_stride=8)
    assert model.decode_head.effective_rates == (6, 12, 18)
    assert [u.conv2.dilation[0] for u in model.backbone.layer4] == [2, 4, 8]
    before = snapshot(model)
    model.eval()
    assert model.decode_head.effective_rates == (12, 24, 36)
    assert [u.conv2.dilation[0] for u in model.backbone.layer4] == [4, 8, 16]
    data = batch(model, size=40, n=1)
    with torch.no_grad():
        assert model(data['inputs'], mode='tensor').shape == (1, NUM_CLASSES, 5, 5)
    model.train()
    assert model.decode_head.effective_rates == (6, 12, 18)
    assert_same_state(model, before)


def test_cascade_model_trained_at_os16_evaluated_at_os8():
    """Table 4: ResNet + block7, MG(1,2,1), a 1x1 classifier on the last block."""
    model = build(backbone=dict(BACKBONE, multi_grid=(1, 2, 1), num_cascade_blocks=3),
                  decode_head=dict(type='FCNHead', in_channels=128, channels=128, num_convs=0,
                                   concat_input=False, num_classes=NUM_CLASSES, in_index=-1,
                                   norm_cfg=dict(type='BN')),
                  output_stride=16, test_output_stride=8)
    assert [u.conv2.dilation[0] for u in model.backbone.layer7] == [16, 32, 16]
    model.eval()
    assert [u.conv2.dilation[0] for u in model.backbone.layer7] == [32, 64, 32]
    data = batch(model, size=32, n=1)
    with torch.no_grad():
        assert model(data['inputs'], mode='tensor').shape == (1, NUM_CLASSES, 4, 4)


@pytest.mark.parametrize('output_stride', [16, 8])
def test_forward_backward_at_os16_and_os8(output_stride):
    model = build(decode_head=aspp_head(), output_stride=output_stride,
                  auxiliary_head=dict(type='FCNHead', in_channels=64, in_index=2, channels=8,
                                      num_convs=1, concat_input=False, num_classes=NUM_CLASSES,
                                      norm_cfg=dict(type='BN'), loss_decode=dict(
                                          type='CrossEntropyLoss', loss_weight=0.4)))
    model.train()
    losses = model(**batch(model, size=33), mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    grad = model.backbone.layer4[2].conv2.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.backbone.layer4[0].conv2.dilation[0] == 32 // output_stride


def _strides(model):
    return (model.backbone.current_output_stride, model.decode_head.current_output_stride,
            model.decode_head.effective_rates)


@pytest.mark.parametrize('order', ['eval_then_helper', 'helper_then_eval'])
def test_free_function_sets_the_test_output_stride_not_the_training_one(order):
    """``set_output_stride(model, 8)`` is for evaluation: in either order with ``.eval()`` the
    model evaluates at OS 8, and ``.train()`` trains again at its OS 16 with rates (6, 12, 18)."""
    head = dict(type='DeepLabV3Head', in_channels=128, channels=8, atrous_rates=(6, 12, 18),
                num_classes=NUM_CLASSES, in_index=-1, norm_cfg=dict(type='BN'))
    model = build(decode_head=head, output_stride=16)
    if order == 'eval_then_helper':
        model.eval()
        set_output_stride(model, 8)
    else:
        set_output_stride(model, 8)
        assert _strides(model) == (16, 16, (6, 12, 18)), 'train mode keeps the training OS'
        model.eval()
    assert _strides(model) == (8, 8, (12, 24, 36))
    assert (model.output_stride, model.test_output_stride) == (16, 8)
    model.train()
    assert _strides(model) == (16, 16, (6, 12, 18))
    losses = model(**batch(model, size=33), mode='loss')  # trains at OS 16
    assert losses['decode.loss_ce'].requires_grad
    assert _strides(model) == (16, 16, (6, 12, 18))


def test_mode_change_realigns_a_submodule_switched_on_its_own():
    model = build(output_stride=16, test_output_stride=8).eval()
    assert oses(model) == (8, 8)
    set_output_stride(model.backbone, 32)  # the free function on a submodule: switched at once
    model.decode_head.switch_output_stride(32)  # behind the segmentor's back
    assert oses(model) == (32, 32)
    model.train()
    assert oses(model) == (16, 16)
    model.eval()
    assert oses(model) == (8, 8)


def test_the_segmentor_builds_its_parts_at_its_output_stride_once():
    """The segmentor owns the OS: its parts are built at it, not built at their default and
    switched; a part's config may repeat the value, not contradict it."""
    model = build(backbone=dict(BACKBONE, output_stride=8), output_stride=8)
    assert model.decode_head.calls == [8]  # built at 8 and never switched
    assert oses(model) == (8, 8) and model.current_output_stride == 8
    with pytest.raises(ValueError, match=r'DeepLabV3: backbone.output_stride=8 differs from '
                       r'output_stride=16; the segmentor owns the output stride'):
        build(backbone=dict(BACKBONE, output_stride=8))
    with pytest.raises(ValueError, match=r'decode_head.output_stride=32 differs'):
        build(decode_head=probe_head(output_stride=32), output_stride=8)


@pytest.mark.parametrize('kwargs,match', [
    (dict(output_stride=12), r'^output_stride=12 is not allowed: expected a '
     r'power of'),
    (dict(output_stride=16, test_output_stride=3),
     r'DeepLabV3: test_output_stride=3 was rejected: output_stride=3 is not allowed'),
    (dict(output_stride=16, test_output_stride=64),
     r'DeepLabV3: test_output_stride=64 was rejected: .*one of \(4, 8, 16, 32\)'),
    (dict(output_stride=16, test_output_stride=4),
     r'test_output_stride=4 was rejected: _OSProbeHead: output_stride=4'),
])
def test_bad_output_strides(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


def test_rejected_test_output_stride_leaves_the_model_untouched():
    model = build(output_stride=16).eval()
    with pytest.raises(ValueError, match='test_output_stride=4 was rejected'):
        model.test_output_stride = 4  # the backbone accepts 4, the head does not
    assert oses(model) == (16, 16)
    assert model.test_output_stride is None


def test_a_model_without_an_output_stride_to_own_is_refused():
    fixed = dict(backbone=dict(type='ResNetV1c', depth=18, base_channels=4, stem_channels=8),
                 decode_head=dict(aspp_head(), in_channels=32))
    with pytest.raises(ValueError, match=r"DeepLabV3: neither backbone 'ResNetV1c' nor "
                       r"decode_head 'ASPPHead' follows an output stride.*EncoderDecoder"):
        build(**fixed)
