# Cityscapes "train_fine" (2,975 images) for training, val (500) for evaluation (paper App. C):
# "the same training protocol as before except ... crop size equal to 769, and running inference
# on the whole image". Labels are the 19 train ids (`*_gtFine_labelTrainIds.png`, written by
# `tools/prepare_cityscapes.py`).
#
# Training: the VOC base's pipeline (official input_preprocess, step by step: discrete random
# scale {0.5, ..., 2.0}, pad with the mean pixel / ignore label, random crop, flip) at 769.
# Test: the whole image, padded by the data preprocessor to 1025 x 2049 (odd sizes for
# align_corners, as the TF reference evaluates Cityscapes).
# CheckSegSample names a label of another size than its image, a colour label, or label
# values outside 0..18 and 255 (e.g. raw label ids instead of train ids).
_base_ = ['./voc12aug_513x513.py']
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes/'
crop_size = (769, 769)
train_pipeline = _base_.train_pipeline
train_pipeline[2].num_classes = 19  # CheckSegSample
train_pipeline[4].crop_size = crop_size  # RandomCrop
train_pipeline[5].size = crop_size  # Pad
test_pipeline = _base_.test_pipeline
test_pipeline[2].num_classes = 19
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
