# Tab. 1, output stride 128: ResNet-50 + block7, trained and evaluated at output stride 128 (block6
# keeps its stride; block7 rate 2).
_base_ = ['./deeplabv3-block7_r50-d16_1xb16-30k_voc12aug-513x513.py']
model = dict(output_stride=128)
paper_ref = dict(table='Table 1', row='OS=128', miou=42.34)
