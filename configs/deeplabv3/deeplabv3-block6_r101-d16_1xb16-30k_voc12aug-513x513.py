# Tab. 2, ResNet-101 block6: 2 cascaded blocks (up to block6), output stride 16, no multi-grid.
_base_ = ['./deeplabv3-block7_r101-d16_1xb16-30k_voc12aug-513x513.py']
model = dict(backbone=dict(num_cascade_blocks=2))
paper_ref = dict(table='Table 2', row='ResNet-101, block6', miou=75.34)
