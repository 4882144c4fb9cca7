# Tab. 12, OS=8 + MS: output stride 8 and multi-scale inputs {0.75, 1, 1.25}, class probabilities
# averaged (Sec. 4.2), no flip. Test-time augmentation is switched on by --tta:
#     python tools/test.py configs/deeplabv3/<this file> \
#         work_dirs/deeplabv3-aspp_r101-d16-mg124_1xb16-90k_cityscapes-769x769/iter_90000.pth --tta
_base_ = ['./deeplabv3-aspp_r101-d16-mg124_1xb16-90k_cityscapes-769x769_eval-os8-ms-flip.py']
# Multi-scale {0.75, 1, 1.25} ("we could fit scales = {0.75, 1, 1.25} on a K40 GPU"), no flip.
tta_pipeline = _base_.tta_pipeline
tta_pipeline[1].transforms[1] = [dict(type='RandomFlip', prob=0., direction='horizontal')]
paper_ref = dict(table='Table 12', row='OS=8 + MS', miou=79.06)
