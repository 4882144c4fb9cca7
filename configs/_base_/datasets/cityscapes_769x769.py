# Cityscapes "train_fine" (2,975 images) for training, val (500) for evaluation (paper App. C):
# "the same training protocol as before except ... crop size equal to 769, and running inference
# on the whole image". Labels are the 19 train ids (`*_gtFine_labelTrainIds.png`, written by
# `tools/prepare_cityscapes.py`).
#
# All images are 2048 x 1024, so RandomResize to a ratio of (2048, 1024) is the paper's random
# scale 0.5..2.0 of the original image. Test: the whole image, padded by the data preprocessor to
# 1025 x 2049 (odd sizes for align_corners, as the TF reference evaluates Cityscapes).
# The checked transforms name a file that cannot be decoded, a label of another size than its
# image, or label values outside 0..18 and 255 (e.g. raw label ids instead of train ids).
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes/'
crop_size = (769, 769)
train_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(type='CheckedLoadAnnotations'),
    dict(type='CheckSegSample', num_classes=19),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(type='CheckedLoadAnnotations'),
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
