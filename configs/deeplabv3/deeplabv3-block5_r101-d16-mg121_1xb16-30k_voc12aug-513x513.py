# Tab. 3, Multi-Grid (1,2,1), block5: ResNet-101 cascade at output stride 16 whose units in block4
# and in every cascaded block use the unit rates (1,2,1) times the block rate (Sec. 3.2): block4 (2,
# 4, 2), block5 twice that, and so on.
_base_ = ['./deeplabv3-block5_r101-d16_1xb16-30k_voc12aug-513x513.py']
model = dict(backbone=dict(multi_grid=(1, 2, 1)))
paper_ref = dict(table='Table 3', row='MG(1,2,1), block5', miou=75.67)
