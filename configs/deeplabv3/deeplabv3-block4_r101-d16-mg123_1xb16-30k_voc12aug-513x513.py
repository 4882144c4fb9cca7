# Tab. 3, Multi-Grid (1,2,3), block4: ResNet-101 cascade at output stride 16 whose units in block4
# use the unit rates (1,2,3) times the block rate (Sec. 3.2): block4 (2, 4, 6).
_base_ = ['./deeplabv3-block4_r101-d16_1xb16-30k_voc12aug-513x513.py']
model = dict(backbone=dict(multi_grid=(1, 2, 3)))
paper_ref = dict(table='Table 3', row='MG(1,2,3), block4', miou=73.14)
