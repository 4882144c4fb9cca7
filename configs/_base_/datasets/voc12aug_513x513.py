# PASCAL VOC 2012 "trainaug" for training, VOC 2012 val for evaluation (paper Sec. 4).
#
# trainaug = the 1,464 VOC train images (labels in SegmentationClass) + the 9,118 SBD images that
# are neither in VOC train nor in VOC val (labels converted into SegmentationClassAug and listed in
# aug.txt by `tools/prepare_voc_aug.py`): 10,582 images, as in the paper.
#
# Training pipeline of Sec. 4.1, step by step as the official input_preprocess
# .preprocess_image_and_label (see docs/protocol.md):
# 1. the image stays float (to_float32), as the official code casts it before resizing;
# 2. random scale drawn from the discrete set {0.5, 0.75, ..., 2.0} (train.py min_scale_factor
#    0.5, max_scale_factor 2.0, scale_factor_step_size 0.25; preprocess_utils.get_random_scale),
#    bilinear for the image, nearest for the label: mmcv's RandomChoice of one Resize per factor;
# 3. pad to at least 513 x 513 at the bottom/right with the mean pixel and the ignore label,
#    then a random 513 x 513 crop. Cropping first (mmseg's RandomCrop takes the whole side where
#    the image is smaller) and padding after (mmcv's Pad) draws the same crops: the offset is
#    uniform over the positions where the image is larger and 0 where it was padded;
# 4. random left-right flip with probability 0.5, *after* padding, so the padding of a flipped
#    crop is on the left, as in the official code. No photometric distortion.
# The mean pixel is written in the loaded (BGR) channel order, so that normalisation turns the
# padding into 0, as the official code's padding is 0 after mean subtraction.
# Test: the image as it is (no resize); the data preprocessor pads it to 513 x 513 and the
# prediction is cropped back.
# Loading is mmseg's; the plugin's dataset and CheckSegSample stop a wrong root, a split file
# naming absent files, an undecodable file, a label of another size than its image or a label
# value outside 0..20 and 255 with an error naming the file (run
# `tools/check_dataset.py data/VOCdevkit/VOC2012` to see every problem at once).
dataset_type = 'CheckedPascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
crop_size = (513, 513)
scale_factors = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
random_scale = dict(
    type='RandomChoice',
    transforms=[[dict(type='Resize', scale_factor=s, keep_ratio=True)] for s in scale_factors])
mean_pixel_bgr = (103.53, 116.28, 123.675)
train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegSample', num_classes=21),
    random_scale,
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='Pad', size=crop_size, pad_val=dict(img=mean_pixel_bgr, seg=255)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegSample', num_classes=21),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    # Sec. 4.1: BN statistics are computed over a batch of 16 (all GPUs together).
    batch_size=16,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(
                type=dataset_type,
                data_root=data_root,
                data_prefix=dict(img_path='JPEGImages', seg_map_path=labels),
                ann_file=f'ImageSets/Segmentation/{split}.txt',
                pipeline=train_pipeline)
            for split, labels in (('train', 'SegmentationClass'), ('aug', 'SegmentationClassAug'))
        ]))
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
