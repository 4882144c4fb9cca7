# Tab. 12, OS=8: the model trained by
# `deeplabv3-aspp_r101-d16-mg124_1xb16-90k_cityscapes-769x769.py`, evaluated at output stride 8
# (Sec. 4.2 "Inference strategy": the same weights, with the block3/4 atrous rates and the ASPP
# rates doubled). Nothing to train; evaluate the trained checkpoint (the same as `tools/test.py
# <trained config> <ckpt> --output-stride 8`):
#     python tools/test.py configs/deeplabv3/<this file> \
#         work_dirs/deeplabv3-aspp_r101-d16-mg124_1xb16-90k_cityscapes-769x769/iter_90000.pth
_base_ = ['./deeplabv3-aspp_r101-d16-mg124_1xb16-90k_cityscapes-769x769.py']
model = dict(test_output_stride=8)
paper_ref = dict(table='Table 12', row='OS=8', miou=77.82)
