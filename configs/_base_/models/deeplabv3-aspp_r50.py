# DeepLabV3, parallel model (paper Sec. 3.3, Fig. 5): ResNet-50 with atrous block4 and ASPP
# augmented with image-level features. Experiments change one thing each on top of this.
#
# * Output stride: one knob, `model.output_stride`; the segmentor pushes it into the backbone
#   (strides -> atrous rates, Sec. 3.1) and into the head (ASPP rates (6, 12, 18) are defined at
#   OS 16 and scale with it, Sec. 3.3). `model.test_output_stride` evaluates the same weights at
#   another OS (Tab. 4, 6, 10); `tools/test.py --output-stride 8` sets it from the command line.
# * Multi-grid: unit rates of block4's three units, multiplied by the block's rate (Sec. 3.2), not
#   mmseg's absolute `multi_grid`. (1, 1, 1) here; the best model uses (1, 2, 4).
# * Batch norm: the paper trains BN with decay 0.9997, i.e. running = 0.9997 * running + 0.0003 *
#   batch, which is PyTorch's `momentum=0.0003` (PyTorch's momentum is the weight of the *new*
#   batch statistic, TF's decay the weight of the old). SyncBN so that statistics are computed
#   over the whole batch of 16 when it is split over GPUs (Sec. 4.1: "batch size of 16");
#   non-distributed runs convert it to plain BN.
# * align_corners=True with odd crops (513 = 32 * 16 + 1): the TF reference resizes with
#   align_corners, and the odd crop makes every feature pixel land exactly on an image pixel.
# * ImageNet-pretrained backbone (Sec. 4): mmseg's ResNet-V1c weights, whose deep 3x3 stem matches
#   `stem='deep'`. Offline runs set `model.backbone.init_cfg=None`.
norm_cfg = dict(type='SyncBN', momentum=0.0003, requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    # Padding happens after normalisation, so 0 is the mean pixel: the TF reference pads with
    # the mean too. Labels are padded with the ignore index.
    pad_val=0,
    seg_pad_val=255,
    # Training crops are padded up to the VOC crop; test images are padded to the same 513 x 513
    # canvas ("crop size 513 during both training and test", Sec. 4.1) and the prediction is
    # cropped back to the image afterwards. Cityscapes overrides both, the 321 ablation `size`.
    size=(513, 513),
    test_cfg=dict(size=(513, 513)))
model = dict(
    type='DeepLabV3',
    data_preprocessor=data_preprocessor,
    output_stride=16,
    test_output_stride=None,
    backbone=dict(
        type='MultiGridResNet',
        depth=50,
        stem='deep',
        multi_grid=(1, 1, 1),
        # The unit whose stride is removed (the first of its block here) keeps the rate it had;
        # the rest of the block takes the new one. This is the official code's rule (TF-slim's
        # stack_blocks_dense), under which OS 16 computes the OS-8 features on every other pixel
        # exactly (Tab. 4, 6 switch the OS at test time). On the demo it beat the new rate on
        # that unit too (README, "Rate of the unit whose stride is removed"; docs/protocol.md).
        contract_dilation=True,
        num_cascade_blocks=0,
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnet50_v1c')),
    decode_head=dict(
        type='DeepLabV3Head',
        in_channels=2048,
        in_index=-1,
        channels=256,
        atrous_rates=(6, 12, 18),
        rates_output_stride=16,
        image_pooling=True,
        # The official TF code drops 10% of the projected features, element-wise, before the
        # classifier (model._extract_features: slim.dropout(keep_prob=0.9) after
        # concat_projection; the paper does not say). `project_dropout` is that element-wise
        # dropout at that place; BaseDecodeHead's channel-wise Dropout2d is switched off.
        project_dropout=0.1,
        dropout_ratio=0.0,
        num_classes=21,
        norm_cfg=norm_cfg,
        align_corners=True,
        # Sec. 4.1 "Upsampling logits": the logits are upsampled to the label size, the ground
        # truth is kept intact (the appendix ablation sets downsample_label=True).
        downsample_label=False,
        # The official loss (train_utils.add_softmax_cross_entropy_loss_for_each_scale) sums the
        # pixel losses of the batch and divides by the number of *non-ignored* pixels; mmseg's
        # default divides by every pixel, label 255 (boundaries, crop padding) included.
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
