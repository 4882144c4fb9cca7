# Tab. 1, output stride 256: ResNet-50 + block7, trained and evaluated at output stride 256 (no
# atrous convolution at all: every block keeps its stride).
_base_ = ['./deeplabv3-block7_r50-d16_1xb16-30k_voc12aug-513x513.py']
model = dict(output_stride=256)
paper_ref = dict(table='Table 1', row='OS=256', miou=20.29)
