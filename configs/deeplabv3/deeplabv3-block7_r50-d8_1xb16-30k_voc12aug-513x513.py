# Tab. 1, output stride 8: ResNet-50 + block7, trained and evaluated at output stride 8 (block3 rate
# 2, block4 4, block5..7 8, 16, 32).
_base_ = ['./deeplabv3-block7_r50-d16_1xb16-30k_voc12aug-513x513.py']
model = dict(output_stride=8)
paper_ref = dict(table='Table 1', row='OS=8', miou=75.18)
