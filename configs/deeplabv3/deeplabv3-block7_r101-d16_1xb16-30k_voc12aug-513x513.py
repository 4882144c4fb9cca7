# Tab. 2, ResNet-101 block7 (also Tab. 3, MG(1,1,1) block7): the cascade model on ResNet-101 with
# block5..block7, no multi-grid, output stride 16, VOC trainaug stage-1 protocol.
_base_ = [
    '../_base_/models/deeplabv3-cascade_r101.py', '../_base_/datasets/voc12aug_513x513.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_30k.py'
]
model = dict(output_stride=16, backbone=dict(num_cascade_blocks=3, multi_grid=(1, 1, 1)))
paper_ref = dict(table='Table 2', row='ResNet-101, block7', miou=75.76)
