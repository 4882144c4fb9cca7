# SyntheticShapes: the built-in demo dataset (deeplabv3_plugin/datasets/synthetic_shapes.py), in
# PASCAL VOC layout, 6 classes (background, circle, square, triangle, star, ring), 192 x 192 px.
# Generate it with `python tools/generate_shapes.py data/synthetic_shapes` (tools/demo.py does
# it for you). Nothing is downloaded.
#
# The pipelines follow the VOC base of the paper's protocol scaled to the image size (Sec. 4.1:
# random scale 0.5..2.0, crop, left-right flip) and load with mmseg's transforms, so mmseg's
# MMSegInferencer reads them. The dataset names a file that cannot be read; `CheckSegSample`,
# right after the label is loaded and before anything resizes it, stops a label of another size
# than its image, or with values outside 0..5 and 255, with an error naming the file instead of
# failing deep inside the loss or the metric.
dataset_type = 'SyntheticShapesDataset'
data_root = 'data/synthetic_shapes'
crop_size = (192, 192)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegSample', num_classes=6),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
# Images are generated at the crop size, so testing needs no resize; the label is loaded (and
# checked) after the image, as in mmseg's test pipelines.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegSample', num_classes=6),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/train.txt',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
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
