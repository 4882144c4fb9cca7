# Tab. 4, OS=8 + MS: output stride 8 and multi-scale inputs {0.5, 0.75, 1.0, 1.25, 1.5, 1.75}, class
# probabilities averaged (Sec. 4.2), no flip. Test-time augmentation is switched on by --tta:
#     python tools/test.py configs/deeplabv3/<this file> \
#         work_dirs/deeplabv3-block7_r101-d16-mg121_1xb16-30k_voc12aug-513x513/iter_30000.pth --tta
_base_ = ['./deeplabv3-block7_r101-d16-mg121_1xb16-30k_voc12aug-513x513_eval-os8.py']
# Multi-scale {0.5, ..., 1.75} without the flipped copies.
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale_factor=s, keep_ratio=True)
                for s in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
            ],
            [dict(type='RandomFlip', prob=0., direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
]
paper_ref = dict(table='Table 4', row='OS=8 + MS', miou=78.93)
