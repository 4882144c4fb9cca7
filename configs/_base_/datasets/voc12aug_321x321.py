# trainaug with the 321 x 321 training crop of DeepLab v1/v2, for the appendix ablation (Tab. 8):
# only the training crop changes; evaluation still pads to 513 x 513.
_base_ = ['./voc12aug_513x513.py']
crop_size = (321, 321)
mean_pixel_bgr = {{_base_.mean_pixel_bgr}}
train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegSample', num_classes=21),
    {{_base_.random_scale}},
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='Pad', size=crop_size, pad_val=dict(img=mean_pixel_bgr, seg=255)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackSegInputs'),
]
# A list replaces the base's list as a whole, so both datasets are restated with the new pipeline.
dataset_train = dict(
    type={{_base_.dataset_type}},
    data_root={{_base_.data_root}},
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt',
    pipeline=train_pipeline)
dataset_aug = dict(
    type={{_base_.dataset_type}},
    data_root={{_base_.data_root}},
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    ann_file='ImageSets/Segmentation/aug.txt',
    pipeline=train_pipeline)
train_dataloader = dict(dataset=dict(datasets=[dataset_train, dataset_aug]))
