# The official VOC 2012 trainval set (1,464 + 1,449 images with the finer VOC labels) for the
# second training stage of the test-set model (Sec. 4.3, "Test set result"): the VOC labels are
# more precise than SBD's, especially for bicycles. Same pipeline as trainaug.
_base_ = ['./voc12aug_513x513.py']
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type={{_base_.dataset_type}},
        data_root={{_base_.data_root}},
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/trainval.txt',
        pipeline={{_base_.train_pipeline}}))
