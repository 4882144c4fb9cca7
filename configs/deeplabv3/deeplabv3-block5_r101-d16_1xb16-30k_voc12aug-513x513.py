# Tab. 2, ResNet-101 block5: 1 cascaded block (up to block5), output stride 16, no multi-grid.
_base_ = ['./deeplabv3-block7_r101-d16_1xb16-30k_voc12aug-513x513.py']
model = dict(backbone=dict(num_cascade_blocks=1))
paper_ref = dict(table='Table 2', row='ResNet-101, block5', miou=73.21)
