# PASCAL VOC 2012 "trainaug" for training, VOC 2012 val for evaluation (paper Sec. 4).
#
# trainaug = the 1,464 VOC train images (labels in SegmentationClass) + the 9,118 SBD images that
# are neither in VOC train nor in VOC val (labels converted into SegmentationClassAug and listed in
# aug.txt by `tools/prepare_voc_aug.py`): 10,582 images, as in the paper.
#
# Training pipeline of Sec. 4.1: random scale 0.5..2.0, random 513 x 513 crop, random left-right
# flip, nothing else (no photometric distortion, no crop re-drawing by class ratio). The crop is
# padded to 513 x 513 by the model's data preprocessor (mean pixel, ignore label).
# Random scale: mmcv's RandomResize scales to a random fraction of a *target* size; with
# keep_ratio the factor is ratio * 500 / long side, and VOC images have a 500-pixel long side, so
# the factor applied to the original image is the paper's uniform 0.5..2.0 (the few VOC images
# with a shorter long side are first brought to 500).
# Test: the image as it is (no resize); the data preprocessor pads it to 513 x 513 and the
# prediction is cropped back.
# Loading goes through the plugin's checked dataset and transforms: a wrong root, a split file
# naming absent files, an undecodable file, a label of another size than its image or a label
# value outside 0..20 and 255 stops with an error naming the file (run
# `tools/check_dataset.py data/VOCdevkit/VOC2012` to see every problem at once).
dataset_type = 'CheckedPascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
crop_size = (513, 513)
train_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(type='CheckedLoadAnnotations'),
    dict(type='CheckSegSample', num_classes=21),
    dict(type='RandomResize', scale=(500, 500), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(type='CheckedLoadAnnotations'),
    dict(type='CheckSegSample', num_classes=21),
    dict(type='PackSegInputs'),
]
dataset_train = dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt',
    pipeline=train_pipeline)
dataset_aug = dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    ann_file='ImageSets/Segmentation/aug.txt',
    pipeline=train_pipeline)
train_dataloader = dict(
    # Sec. 4.1: BN statistics are computed over a batch of 16 (all GPUs together).
    batch_size=16,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ConcatDataset', datasets=[dataset_train, dataset_aug]))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
