# Tab. 10, train OS=32, eval OS=8 (75.75): the model of
# `deeplabv3-aspp_r101-d32-mg124_1xb24-30k_voc12aug-513x513.py` evaluated at output stride 8:
#     python tools/test.py configs/deeplabv3/<this file> \
#         work_dirs/deeplabv3-aspp_r101-d32-mg124_1xb24-30k_voc12aug-513x513/iter_30000.pth
_base_ = ['./deeplabv3-aspp_r101-d32-mg124_1xb24-30k_voc12aug-513x513.py']
model = dict(test_output_stride=8)
paper_ref = dict(table='Table 10', row='train OS=32, eval OS=8', miou=75.75)
