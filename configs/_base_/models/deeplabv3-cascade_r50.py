# DeepLabV3, cascade model "going deeper with atrous convolution" (paper Sec. 3.2, Fig. 3):
# ResNet-50 with block5..block7, copies of block4 (three bottleneck units each), appended in
# cascade. At output stride 16 their block rates double block after block (block4..7: 2, 4, 8, 16,
# times the multi-grid unit rates). There is no ASPP: the logits come from a 1x1 classifier on the
# last block, which is mmseg's FCNHead with no convs (`num_convs=0` needs channels == in_channels),
# and no dropout: the paper has none, and the official code (model._extract_features) drops out
# only after the ASPP projection, which this model does not have.
#
# Default: block7 (`num_cascade_blocks=3`, Tab. 1); Tab. 2 and 3 set 0..3 (block4..block7).
_base_ = ['./deeplabv3-aspp_r50.py']
norm_cfg = dict(type='SyncBN', momentum=0.0003, requires_grad=True)
model = dict(
    backbone=dict(num_cascade_blocks=3),
    decode_head=dict(
        _delete_=True,
        type='FCNHead',
        in_channels=2048,
        in_index=-1,
        channels=2048,
        num_convs=0,
        concat_input=False,
        dropout_ratio=0.0,
        num_classes=21,
        norm_cfg=norm_cfg,
        align_corners=True,
        # The official normalisation: sum over the batch / number of non-ignored pixels.
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)))
