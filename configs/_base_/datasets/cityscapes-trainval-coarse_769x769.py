# Cityscapes "trainval coarse" (App. C, Tab. 13): the 3,475 finely annotated train + val images
# and the ~20,000 coarsely annotated train_extra images (`*_gtCoarse_labelTrainIds.png`, written
# by `tools/prepare_cityscapes.py --gt-dir gtCoarse`). Validation on val stays defined (it is in
# the training set now, so it only shows that training runs); the experiment config that uses this
# base switches validation off and sets the test split, which only the test server can score.
_base_ = ['./cityscapes_769x769.py']
fine_train = dict(
    type={{_base_.dataset_type}},
    data_root={{_base_.data_root}},
    data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
    pipeline={{_base_.train_pipeline}})
fine_val = dict(
    type={{_base_.dataset_type}},
    data_root={{_base_.data_root}},
    data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
    pipeline={{_base_.train_pipeline}})
coarse_train_extra = dict(
    type={{_base_.dataset_type}},
    data_root={{_base_.data_root}},
    data_prefix=dict(img_path='leftImg8bit/train_extra', seg_map_path='gtCoarse/train_extra'),
    seg_map_suffix='_gtCoarse_labelTrainIds.png',
    pipeline={{_base_.train_pipeline}})
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[fine_train, fine_val, coarse_train_extra]))
