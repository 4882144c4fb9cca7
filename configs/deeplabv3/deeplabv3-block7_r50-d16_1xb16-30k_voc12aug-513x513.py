# Tab. 1, output stride 16 (also Tab. 2, ResNet-50 block7): the cascade model "going deeper with
# atrous convolution" (Sec. 3.2), ResNet-50 + block5..block7, no multi-grid, trained and evaluated
# at output stride 16 on VOC trainaug with the stage-1 protocol (Sec. 4.1). Train: `python
# tools/train.py configs/deeplabv3/<this file>`.
_base_ = [
    '../_base_/models/deeplabv3-cascade_r50.py', '../_base_/datasets/voc12aug_513x513.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_30k.py'
]
model = dict(output_stride=16, backbone=dict(num_cascade_blocks=3, multi_grid=(1, 1, 1)))
paper_ref = dict(table='Table 1', row='OS=16', miou=73.88)
