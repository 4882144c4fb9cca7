# The parallel (ASPP) model on ResNet-101 (Tab. 5, 6 and the appendix use it).
_base_ = ['./deeplabv3-aspp_r50.py']
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnet101_v1c')))
