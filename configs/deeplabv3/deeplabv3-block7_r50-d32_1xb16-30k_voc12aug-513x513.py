# Tab. 1, output stride 32: ResNet-50 + block7, trained and evaluated at output stride 32 (block4
# keeps its stride; block5..7 rates 2, 4, 8).
_base_ = ['./deeplabv3-block7_r50-d16_1xb16-30k_voc12aug-513x513.py']
model = dict(output_stride=32)
paper_ref = dict(table='Table 1', row='OS=32', miou=70.06)
