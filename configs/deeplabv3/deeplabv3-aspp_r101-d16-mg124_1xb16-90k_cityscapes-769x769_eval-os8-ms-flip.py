# Tab. 12, OS=8 + MS + Flip: output stride 8, multi-scale inputs {0.75, 1, 1.25} and their left-
# right flips, probabilities averaged. Switched on by --tta:
#     python tools/test.py configs/deeplabv3/<this file> \
#         work_dirs/deeplabv3-aspp_r101-d16-mg124_1xb16-90k_cityscapes-769x769/iter_90000.pth --tta
_base_ = ['./deeplabv3-aspp_r101-d16-mg124_1xb16-90k_cityscapes-769x769_eval-os8.py']
# Multi-scale {0.75, 1, 1.25} and the left-right flip of each scale.
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale_factor=s, keep_ratio=True) for s in (0.75, 1.0, 1.25)],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal'),
            ],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
]
paper_ref = dict(table='Table 12', row='OS=8 + MS + Flip', miou=79.30)
