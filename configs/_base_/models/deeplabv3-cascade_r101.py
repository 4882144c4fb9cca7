# The cascade model on ResNet-101 (Tab. 2 bottom row, Tab. 3 and 4).
_base_ = ['./deeplabv3-cascade_r50.py']
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnet101_v1c')))
