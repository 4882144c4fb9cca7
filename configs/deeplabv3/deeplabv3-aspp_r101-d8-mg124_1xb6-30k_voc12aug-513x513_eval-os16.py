# Tab. 10, train OS=8, eval OS=16 (74.45): the model of
# `deeplabv3-aspp_r101-d8-mg124_1xb6-30k_voc12aug-513x513.py` evaluated at output stride 16:
#     python tools/test.py configs/deeplabv3/<this file> \
#         work_dirs/deeplabv3-aspp_r101-d8-mg124_1xb6-30k_voc12aug-513x513/iter_30000.pth
_base_ = ['./deeplabv3-aspp_r101-d8-mg124_1xb6-30k_voc12aug-513x513.py']
model = dict(test_output_stride=16)
paper_ref = dict(table='Table 10', row='train OS=8, eval OS=16', miou=74.45)
