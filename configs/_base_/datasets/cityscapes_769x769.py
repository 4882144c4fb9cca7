# Cityscapes "train_fine" (2,975 images) for training, val (500) for evaluation (paper App. C):
# "the same training protocol as before except ... crop size equal to 769, and running inference
# on the whole image". Labels are the 19 train ids (`*_gtFine_labelTrainIds.png`, written by
# `tools/prepare_cityscapes.py`).
#
# Training: the VOC base's pipeline (official input_preprocess, step by step: discrete random
# scale {0.5, ..., 2.0}, pad with the mean pixel / ignore label, random crop, flip) at 769. Test: the whole image, padded by the data preprocessor to
# 1025 x 2049 (odd sizes for align_corners, as the TF reference evaluates Cityscapes).
# CheckSegSample names a label of another size than its image, a colour label, or label
# values outside 0..18 and 255 (e.g. raw label ids instead of train ids).
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes/'
crop_size = (769, 769)
scale_factors = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
random_scale = dict(
    type='RandomChoice',
    transforms=[[dict(type='Resize', scale_factor=s, keep_ratio=True)] for s in scale_factors])
mean_pixel_bgr = (103.53, 116.28, 123.675)
train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegSample', num_classes=19),
    random_scale,
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='Pad', size=crop_size, pad_val=dict(img=mean_pixel_bgr, seg=255)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegSample', num_classes=19),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
