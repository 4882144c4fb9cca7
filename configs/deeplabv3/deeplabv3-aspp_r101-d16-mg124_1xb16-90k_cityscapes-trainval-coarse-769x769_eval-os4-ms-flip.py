# Tab. 13, DeepLabv3 (81.3 on the Cityscapes *test* set): the best ASPP model trained on "the
# trainval coarse set (i.e., the 3475 finely annotated images and the extra 20000 coarsely annotated
# images)" with the Cityscapes protocol (90K iterations assumed: the paper gives no other number),
# evaluated at output stride 4 with scales {0.75, 1, 1.25, 1.5, 1.75, 2} and flips (App. C; the
# paper ran this on CPUs: OS 4 at scale 2 needs a lot of memory). The test set has no public labels:
# `tools/test.py ... --tta` writes the predictions in the server's label-id format (mmseg's
# CityscapesMetric, which needs `pip install cityscapesscripts`).
_base_ = [
    '../_base_/models/deeplabv3-aspp_r101.py',
    '../_base_/datasets/cityscapes-trainval-coarse_769x769.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_90k.py'
]
model = dict(
    output_stride=16,
    test_output_stride=4,
    data_preprocessor=dict(size=(769, 769), test_cfg=dict(size=(1025, 2049))),
    backbone=dict(multi_grid=(1, 2, 4)),
    decode_head=dict(atrous_rates=(6, 12, 18), image_pooling=True, num_classes=19))
# val is part of the training set here: no validation during training.
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = dict(
    dataset=dict(
        data_prefix=dict(img_path='leftImg8bit/test', seg_map_path='gtFine/test'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]))
test_evaluator = dict(
    _delete_=True,
    type='CityscapesMetric',
    format_only=True,
    keep_results=True,
    output_dir='work_dirs/format_results/cityscapes_test')
tta_pipeline = _base_.tta_pipeline
tta_pipeline[1].transforms[0] = [
    dict(type='Resize', scale_factor=s, keep_ratio=True) for s in (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
]
del tta_pipeline[1].transforms[2]  # the test split has no labels
paper_ref = dict(table='Table 13', row='DeepLabv3', miou=81.3)
