# The `make demo` model: the paper's parallel DeepLabV3 (Sec. 3.3) shrunk to train from scratch on
# two CPU cores in minutes, on the generated SyntheticShapes dataset (tools/demo.py runs it all).
#
# What stays the paper's: the DeepLabV3 segmentor with its single output-stride knob at OS 16,
# block4 atrous with multi-grid unit rates (1, 2) times the block rate 2 (ResNet-18 has two units
# per block, so the grid has two entries; the conv that carried the stride keeps rate 1, as the
# base's contract_dilation says), ASPP with rates (6, 12, 18) plus image-level features,
# batch norm everywhere, logits upsampled to the label, random scale 0.5..2 + crop + flip, poly
# learning rate with SGD, MS+flip test (tools/test.py --tta).
# What changes, and why:
# * ResNet-18 at quarter width (16 base channels, ASPP 64): no ImageNet weights can be downloaded
#   here, so it is trained from scratch (init_cfg=None), and it must fit minutes of CPU. Twice the
#   width gave the same mIoU in the same iterations at 2.4x the time; a larger image did better.
# * 192 x 192 images and crops: the OS-16 feature map is 12 x 12. At 128 px (8 x 8) the same
#   model lost about 10 mIoU: shapes a few feature cells wide cannot be told apart or outlined.
# * BN momentum 0.1 (PyTorch's default) instead of the paper's 0.0003: that value suits 30K
#   fine-tuning iterations from ImageNet statistics; in 1K iterations from scratch the running
#   statistics would barely move from their initial values and evaluation would collapse.
#   Plain BN: one process, nothing to synchronise.
# * lr 0.1: from-scratch training with BN tolerates a larger step than fine-tuning's 0.007
#   (0.05 gave 1-2 mIoU less).
_base_ = [
    '../_base_/models/deeplabv3-aspp_r50.py',
    '../_base_/datasets/synthetic_shapes.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_30k.py',
]
crop_size = (192, 192)
norm_cfg = dict(type='BN', momentum=0.1, requires_grad=True)
# Pad to the crop in training and test. Set at the top level too: for `--tta` mmengine's Runner
# hands the top-level `data_preprocessor` to SegTTAModel, which replaces the model's with it (the
# base's 513 x 513 canvas would then surround every 192 px image and dilute image pooling).
data_preprocessor = dict(size=crop_size, test_cfg=dict(size=crop_size))
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        depth=18,
        stem_channels=16,
        base_channels=16,
        multi_grid=(1, 2),
        norm_cfg=norm_cfg,
        init_cfg=None),
    decode_head=dict(in_channels=128, channels=64, num_classes=6, norm_cfg=norm_cfg))

max_iters = 1000
interval = 500
optim_wrapper = dict(optimizer=dict(lr=0.1))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=interval)
default_hooks = dict(
    checkpoint=dict(interval=interval, max_keep_ckpts=1),
    logger=dict(interval=25))
# Overlays (tools/test.py --show-dir): the class colours at half opacity, so the picture shows.
visualizer = dict(alpha=0.5)
randomness = dict(seed=0)
