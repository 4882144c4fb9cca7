# Tab. 5, MG(1,1,1) + ASPP(6,12,18), no image pooling: block4 unit rates (1,1,1) x 2.
_base_ = ['./deeplabv3-aspp-noimgpool_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py']
model = dict(backbone=dict(multi_grid=(1, 1, 1)))
paper_ref = dict(table='Table 5', row='MG(1,1,1), ASPP(6,12,18)', miou=75.36)
