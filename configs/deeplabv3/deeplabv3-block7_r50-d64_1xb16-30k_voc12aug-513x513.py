# Tab. 1, output stride 64: ResNet-50 + block7, trained and evaluated at output stride 64 (block5
# keeps its stride; block6, 7 rates 2, 4).
_base_ = ['./deeplabv3-block7_r50-d16_1xb16-30k_voc12aug-513x513.py']
model = dict(output_stride=64)
paper_ref = dict(table='Table 1', row='OS=64', miou=59.99)
